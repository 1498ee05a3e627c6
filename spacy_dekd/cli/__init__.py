"""spaCy CLI commands added through the `spacy_cli` entry point."""
from ..errors import one_line_user_errors

one_line_user_errors()
