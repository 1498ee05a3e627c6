__title__ = "spacy-dekd"
__version__ = "0.1.0"
