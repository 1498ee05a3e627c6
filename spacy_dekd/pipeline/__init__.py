from .scorer import make_textcat_scorer_v1, score_transformer_textcat
from .textcat import TransformerTextCategorizer, make_transformer_textcat

__all__ = [
    "TransformerTextCategorizer",
    "make_transformer_textcat",
    "make_textcat_scorer_v1",
    "score_transformer_textcat",
]
