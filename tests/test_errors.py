"""The error catalogue: one code a message, each used, each one line."""
import re
import string
from pathlib import Path

import pytest

from spacy_dekd.errors import Errors

PACKAGE = Path(__file__).parent.parent / "spacy_dekd"
CODES = sorted(name for name in vars(Errors) if re.fullmatch(r"D\d{3}", name))


def test_codes_are_numbered_without_gaps():
    assert CODES == [f"D{i:03d}" for i in range(1, len(CODES) + 1)]


@pytest.mark.parametrize("code", CODES)
def test_each_message_carries_its_code_is_one_line_and_used(code):
    message = getattr(Errors, code)
    assert message.startswith(f"[{code}] ") and "\n" not in message
    fields = {field for _, field, _, _ in string.Formatter().parse(message) if field}
    assert message.format(**{field: 0.5 for field in fields}).startswith(f"[{code}]")
    sources = "".join(path.read_text(encoding="utf8") for path in PACKAGE.rglob("*.py") if path.name != "errors.py")
    assert f"Errors.{code}" in sources, f"{code} is in the catalogue but nothing raises it"


def test_messages_are_not_written_twice():
    messages = [vars(Errors)[code] for code in CODES]
    assert len(messages) == len(set(messages))
