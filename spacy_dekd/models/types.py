"""Names for the types of the thinc models in this package."""
from typing import List

from spacy.tokens import Doc
from thinc.api import Model
from thinc.types import Floats2d

# Docs in, logits (N, C) out.
TransformerClassifierT = Model[List[Doc], Floats2d]
