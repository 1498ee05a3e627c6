"""`spacy init encoder-vectors`: static word vectors from a transformer
encoder (spacy_dekd/vectors.py), written as a pipeline folder that spaCy's
own textcat reads as its vectors (`[initialize] vectors`), as `spacy init
vectors` writes one.

    python -m spacy init encoder-vectors ENCODER OUTPUT TEXTS... [--width 256] [--text-field text]

ENCODER is a Hugging Face encoder folder (a pretrained model, as model2vec
uses), or a pipeline whose `transformer_textcat` lends its fine-tuned one.
The folder is written into a staged sibling and renamed into place when
whole: a failure leaves nothing half-written.
"""
import logging
import time
from pathlib import Path
from typing import Any, List, Tuple

import spacy
from spacy import util
from spacy.cli._util import Arg, Opt, init_cli
from spacy.vectors import Vectors
from wasabi import msg

from ..corpus import read_texts
from ..errors import fail
from ..files import OutputError, check_output, staged_folder
from ..vectors import count_words, encoder_vectors


@init_cli.command("encoder-vectors")
def init_encoder_vectors_cli(
    # fmt: off
    encoder: str = Arg(..., help="A Hugging Face encoder folder, or a pipeline with a transformer_textcat (its fine-tuned encoder)"),
    output_path: Path = Arg(..., help="Folder to create: a blank pipeline holding the vectors"),
    texts: List[Path] = Arg(..., help="Texts whose words join the encoder's own and give their frequencies: .txt (a text a line), .spacy, csv, tsv, json(l), parquet", exists=False),
    width: int = Opt(256, "--width", "-w", help="Vector width after PCA"),
    text_field: str = Opt("text", "--text-field", help="The text column of a csv/json/parquet file"),
    lang: str = Opt("en", "--lang", "-l", help="Language of the blank pipeline (a pipeline ENCODER gives its own)"),
    force: bool = Opt(False, "--force", "-F", help="Replace OUTPUT if it exists"),
    verbose: bool = Opt(False, "--verbose", "-V", help="Show the traceback of an error"),
    # fmt: on
) -> None:
    """Distil an encoder into a table of static word vectors (model2vec's
    recipe: each word through the encoder, PCA, SIF weights) for spaCy's
    textcat (`include_static_vectors = true`).
    """
    if verbose:
        logging.getLogger("spacy_dekd").setLevel(logging.DEBUG)
    try:
        init_encoder_vectors(encoder, output_path, texts, width=width, text_field=text_field, lang=lang, force=force)
    except (ValueError, OSError, OutputError) as err:
        if verbose:
            raise
        fail(str(err).strip().splitlines()[0])


def init_encoder_vectors(
    encoder: str, output: Path, texts: List[Path], *, width: int = 256, text_field: str = "text",
    lang: str = "en", force: bool = False,
) -> Tuple[int, int]:
    """Write the vectors; RETURNS (Tuple[int, int]): (rows, width)."""
    if width < 1:
        raise ValueError(f"--width must be 1 or more, got {width}.")
    missing = [str(path) for path in texts if not path.exists()]
    if missing:
        raise ValueError(f"Not found: {', '.join(missing)}: pass the texts the pipeline will read (the training data, unlabelled text).")
    check_output(output, [encoder, *texts], option="OUTPUT")
    if output.exists() and not force:
        raise ValueError(f"The output '{output}' exists: choose a new folder, or pass --force to replace it.")
    start = time.perf_counter()
    module, tokenizer, nlp = _load_encoder(encoder, lang)
    counts = count_words(nlp, (text for path in texts for text in read_texts(path, text_field)))
    if not counts:
        raise ValueError(f"No words in {', '.join(map(str, texts))}: pass the texts the pipeline will read.")
    msg.info(f"Encoding the encoder's whole words and {len(counts):,} words of the texts, one at a time")
    words, table = encoder_vectors(module, tokenizer, counts, width=width, progress=_progress(start))
    vectors = Vectors(strings=nlp.vocab.strings, shape=table.shape, name=f"{nlp.lang}.encoder_vectors")
    for row, word in enumerate(words):
        for form in casings(word):
            vectors.add(nlp.vocab.strings.add(form), row=row)
    vectors.data[:] = table
    nlp.vocab.vectors = vectors
    with staged_folder(output) as tmp:
        nlp.to_disk(tmp)
    msg.good(f"Saved {len(words):,} vectors of width {table.shape[1]} to {output} in {time.perf_counter() - start:.0f} s")
    msg.text(f"Use them with [initialize] vectors = \"{output}\" and include_static_vectors = true.")
    return table.shape


def casings(word: str) -> List[str]:
    """The forms of a lower-cased word that share its row: as it is,
    capitalised and upper-cased (spaCy keys a table by ORTH; a table's own
    key attribute is not saved with it).
    """
    return list(dict.fromkeys([word, word[:1].upper() + word[1:], word.upper()]))


def _load_encoder(encoder: str, lang: str) -> Tuple[Any, Any, Any]:
    """(the encoder module, its tokenizer, a blank pipeline for the vectors)."""
    path = Path(encoder)
    if (path / "config.cfg").exists() or util.is_package(encoder):
        from ..pipeline.textcat import TransformerTextCategorizer

        pipeline = util.load_model(encoder)
        pipes = [pipe for _, pipe in pipeline.pipeline if isinstance(pipe, TransformerTextCategorizer)]
        if not pipes or pipes[0].shim.module is None:
            raise ValueError(f"The pipeline '{encoder}' has no trained transformer_textcat to take an encoder from.")
        return pipes[0].shim.module.encoder, pipes[0].shim.tokenizer, spacy.blank(pipeline.lang)
    if not (path / "config.json").exists():
        raise ValueError(f"'{encoder}' is neither a pipeline nor a Hugging Face encoder folder (no config.cfg or config.json).")
    from transformers import AutoModel, AutoTokenizer

    return AutoModel.from_pretrained(str(path)), AutoTokenizer.from_pretrained(str(path)), spacy.blank(lang)


def _progress(start: float) -> Any:
    """Prints words done, words per second and the time left, every tenth."""
    shown = [0]

    def show(done: int, total: int) -> None:
        if done * 10 // total > shown[0] or done == total:
            shown[0] = done * 10 // total
            rate = done / max(time.perf_counter() - start, 1e-9)
            msg.text(f"{done:,}/{total:,} words, {rate:,.0f}/s, {(total - done) / rate:.0f} s left")

    return show
