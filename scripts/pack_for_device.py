"""Encoders small enough to carry to a GPU machine that has no network, and
back to float32 there.

    python scripts/pack_for_device.py pack assets/all-mpnet-base-v2 .dev/mpnet --int8 --part-mb 60
    python scripts/pack_for_device.py unpack .dev/mpnet assets/all-mpnet-base-v2

`pack` writes the encoder's small files (config, tokenizer) as they are and
its weights in parts of at most --part-mb: float16, or with --int8 each
matrix as int8 rows with one float16 scale a row (symmetric, round to
nearest: a quarter of float32's bytes; vectors stay float16). `unpack`
writes a folder `from_pretrained` reads, every weight float32 again.
"""
import argparse
import shutil
import sys
from pathlib import Path
from typing import Dict, List

import torch
from safetensors.torch import load_file, save_file

WEIGHTS = "model.safetensors"
SCALE = ".__row_scale__"


def quantize_rows(weight: torch.Tensor) -> Dict[str, torch.Tensor]:
    scale = weight.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127
    rows = torch.round(weight / scale).clamp(-127, 127).to(torch.int8)
    return {"": rows, SCALE: scale.to(torch.float16)}


def pack(source: Path, target: Path, *, int8: bool, part_mb: float) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.is_file() and path.name != WEIGHTS and path.suffix != ".md":
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


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["pack", "unpack"])
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    parser.add_argument("--int8", action="store_true", help="pack: matrices as int8 rows")
    parser.add_argument("--part-mb", type=float, default=60.0, help="pack: the largest part")
    args = parser.parse_args(argv)
    if args.action == "pack":
        pack(args.source, args.target, int8=args.int8, part_mb=args.part_mb)
    else:
        unpack(args.source, args.target)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
