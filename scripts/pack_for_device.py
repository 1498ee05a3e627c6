"""Encoders and packages small enough to carry to a GPU machine that has no
network (scripts/gpu_check.sh), and the encoders back to float32 there.

    python scripts/pack_for_device.py pack assets/all-mpnet-base-v2 .dev/mpnet --int8 --part-mb 58
    python scripts/pack_for_device.py pack assets/all-MiniLM-L6-v2 .dev/minilm
    python scripts/pack_for_device.py site .dev/site.tar.xz --python-version 3.12
    python scripts/pack_for_device.py unpack .dev/mpnet assets/all-mpnet-base-v2   # there

`pack` writes the encoder's small files (config, tokenizer) as they are and
its weights in parts of at most --part-mb: float16, or with --int8 each
matrix as int8 rows with one float16 scale a row (symmetric, round to
nearest: a quarter of float32's bytes; vectors stay float16). `unpack`
writes a folder `from_pretrained` reads, every weight float32 again.

`site` downloads the wheels (for that machine's Python, at the versions
installed here) of the packages its image lacks, unzips them into one folder
with spacy_dekd's dist-info (its entry points: the code itself is the
working tree there), strips the shared libraries and drops the packages'
tests, and writes the folder as a .tar.xz (13 MB) to unpack onto PYTHONPATH.
It needs the registry; `pack` and `unpack` need nothing.
"""
import argparse
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Dict, List

import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).parent.parent
WEIGHTS = "model.safetensors"
# What the H200 machines' image lacks of spaCy's and datasets' requirements
# (device KINDS.md lists what it has).
SITE_PACKAGES = [
    "spacy", "thinc", "blis", "cymem", "preshed", "murmurhash", "srsly", "catalogue", "confection",
    "wasabi", "weasel", "spacy-legacy", "spacy-loggers", "cloudpathlib", "smart-open", "datasets",
    "dill", "multiprocess", "pydantic", "pydantic-core", "annotated-types", "typing-inspection",
]
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64",
             "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64"]
SCALE = ".__row_scale__"


def quantize_rows(weight: torch.Tensor) -> Dict[str, torch.Tensor]:
    scale = weight.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127
    rows = torch.round(weight / scale).clamp(-127, 127).to(torch.int8)
    return {"": rows, SCALE: scale.to(torch.float16)}


def pack(source: Path, target: Path, *, int8: bool, part_mb: float) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.is_file() and path.name != WEIGHTS and path.suffix != ".md" and not path.name.startswith("."):
            shutil.copyfile(path, target / path.name)
    parts: List[Dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, weight in load_file(str(source / WEIGHTS)).items():
        stored = quantize_rows(weight.float()) if int8 and weight.dim() == 2 else {"": weight.to(torch.float16)}
        nbytes = sum(t.numel() * t.element_size() for t in stored.values())
        if size + nbytes > part_mb * 1e6 and parts[-1]:
            parts.append({})
            size = 0
        parts[-1].update({name + suffix: t.contiguous() for suffix, t in stored.items()})
        size += nbytes
    for i, part in enumerate(parts):
        save_file(part, str(target / f"part{i}.safetensors"))
    print(f"{source} -> {target}: {len(parts)} parts")


def unpack(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    tensors: Dict[str, torch.Tensor] = {}
    for path in sorted(source.glob("part*.safetensors")):
        tensors.update(load_file(str(path)))
    weights = {}
    for name, tensor in tensors.items():
        if name.endswith(SCALE):
            continue
        scale = tensors.get(name + SCALE)
        weights[name] = tensor.float() * scale.float() if scale is not None else tensor.float()
    for path in source.iterdir():
        if path.is_file() and not path.name.startswith("part"):
            shutil.copyfile(path, target / path.name)
    save_file(weights, str(target / WEIGHTS))
    print(f"{source} -> {target}: {len(weights)} float32 tensors")


def site(target: Path, python_version: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        wheels, root = Path(tmp) / "wheels", Path(tmp) / "site"
        pins = [f"{name}=={metadata.version(name)}" for name in SITE_PACKAGES]
        platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
        pip = [sys.executable, "-m", "pip", "-q"]
        subprocess.run([*pip, "download", "--no-deps", "--only-binary=:all:", "--python-version", python_version,
                        "--implementation", "cp", *platforms, "-d", str(wheels), *pins], check=True)
        subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(ROOT)], check=True)
        for wheel in wheels.glob("*.whl"):
            with zipfile.ZipFile(wheel) as archive:
                archive.extractall(root, [n for n in archive.namelist() if not n.startswith("spacy_dekd/")])
        if shutil.which("strip"):
            for library in root.rglob("*.so"):
                subprocess.run(["strip", "--strip-unneeded", str(library)], check=True)
        for package in ("spacy", "thinc", "blis"):
            shutil.rmtree(root / package / "tests", ignore_errors=True)
        for pattern in ("*.pyx", "*.pxd", "*.cpp", "*.h"):
            for path in root.rglob(pattern):
                path.unlink()
        target.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(target, "w:xz") as tar:
            tar.add(root, arcname=".")
    print(f"{len(pins)} packages and spacy_dekd's entry points -> {target}")


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["pack", "unpack", "site"])
    parser.add_argument("source", type=Path, help="pack, unpack: the encoder's folder; site: the .tar.xz to write")
    parser.add_argument("target", type=Path, nargs="?")
    parser.add_argument("--int8", action="store_true", help="pack: matrices as int8 rows")
    parser.add_argument("--part-mb", type=float, default=60.0, help="pack: the largest part")
    parser.add_argument("--python-version", default="3.12", help="site: that machine's Python")
    args = parser.parse_args(argv)
    if args.action == "site":
        site(args.source, args.python_version)
    elif args.target is None:
        parser.error(f"{args.action} needs a target folder")
    elif args.action == "pack":
        pack(args.source, args.target, int8=args.int8, part_mb=args.part_mb)
    else:
        unpack(args.source, args.target)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
