"""`spacy init distill-config`: a filled config for an installed user, from
the configs shipped in the package (the project's configs/ are written from
the same source).

    python -m spacy init distill-config student.cfg --variant dekd_minilm --encoder PATH
"""
import json
import re
import sys
from pathlib import Path
from typing import Optional

from spacy.cli._util import Arg, Opt, init_cli
from thinc.api import Config
from wasabi import msg

from ..configs import config_text, names
from ..errors import Errors, fail

HELP = f"""Write a filled config for `spacy distill` (or, with --variant teacher
or no_teacher, for `spacy train`). Variants: {', '.join(names())}."""


@init_cli.command("distill-config", help=HELP)
def init_distill_config_cli(
    # fmt: off
    output_file: Path = Arg(..., help="File to write the config to, or - for standard output", allow_dash=True),
    variant: str = Opt("dekd", "--variant", "-v", help="Which config: dekd, dekd_minilm, kd, pkd, takd, paper, ..."),
    encoder: Optional[str] = Opt(None, "--encoder", "-e", help="paths.encoder: the teacher's encoder (teacher) or the student's (StudentFromPretrained)"),
    force: bool = Opt(False, "--force", "-F", help="Overwrite an existing file"),
    # fmt: on
) -> None:
    """Write one of spacy-dekd's distillation configs, filled."""
    try:
        text = distill_config(variant, encoder=encoder)
    except ValueError as err:
        fail(str(err))
    if str(output_file) == "-":
        sys.stdout.write(text)
        return
    if output_file.exists() and not force:
        fail(Errors.D007.format(output_file=output_file))
    try:
        output_file.parent.mkdir(parents=True, exist_ok=True)
        output_file.write_text(text, encoding="utf8")
    except OSError as err:
        fail(Errors.D008.format(output_file=output_file, reason=err.strerror or err))
    msg.good(f"Saved the '{variant}' config to {output_file}")


def distill_config(variant: str, *, encoder: Optional[str] = None) -> str:
    """The text of a shipped config, with `paths.encoder` set if given."""
    text = config_text(variant)
    if encoder is None:
        return text
    if "${" in encoder:
        raise ValueError(f"--encoder '{encoder}' holds '${{', which a config reads as a reference to another setting: give the encoder's path or name.")
    # A JSON string, '$' doubled: quotes, backslashes (C:\\models) and '$' stay as given.
    value = json.dumps(encoder).replace("$", "$$")
    text, n = re.subn(r"^encoder = .*$", lambda _: f"encoder = {value}", text, count=1, flags=re.M)
    if n == 0:
        raise ValueError(f"The '{variant}' config has no paths.encoder to set.")
    if Config().from_str(text)["paths"]["encoder"] != encoder:
        raise ValueError(f"--encoder '{encoder}' does not survive a round trip through the config: give the encoder's path or name.")
    return text
