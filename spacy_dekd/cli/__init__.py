"""spaCy CLI commands added through the `spacy_cli` entry point."""
