"""scripts/pack_for_device.py: an encoder packed in parts (int8 rows or
float16) comes back a float32 folder that gives the encoder's outputs."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer

from .conftest import write_tiny_encoder

SCRIPT = Path(__file__).parent.parent / "scripts" / "pack_for_device.py"


def pack_and_unpack(source, tmp_path, *args):
    packed, restored = tmp_path / "packed", tmp_path / "restored"
    for command in (["pack", str(source), str(packed), *args], ["unpack", str(packed), str(restored)]):
        subprocess.run([sys.executable, str(SCRIPT), *command], check=True, capture_output=True)
    return packed, restored


@pytest.mark.parametrize("args,atol", [(["--int8", "--part-mb", "0.02"], 0.05), ([], 0.005)])
def test_an_encoder_comes_back_float32_and_close(tmp_path, args, atol):
    source = write_tiny_encoder(tmp_path / "encoder", "mpnet", hidden=64)
    packed, restored = pack_and_unpack(source, tmp_path, *args)
    parts = sorted(packed.glob("part*.safetensors"))
    assert len(parts) > 1 if args else len(parts) == 1
    original, back = load_file(str(source / "model.safetensors")), load_file(str(restored / "model.safetensors"))
    assert back.keys() == original.keys() and all(t.dtype == torch.float32 for t in back.values())
    for name, weight in original.items():
        if args and weight.dim() == 2:
            # int8 rows: half a step of the row's scale (max |w| / 127) off, and
            # the scale's own float16 rounding (2^-11 of 127 steps): < 0.6 step.
            bound = 0.6 * weight.abs().amax(dim=1, keepdim=True) / 127 + 1e-8
        else:
            bound = 1e-3 * weight.abs() + 1e-7  # float16
        assert ((back[name] - weight).abs() <= bound).all(), name
    tokenizer = AutoTokenizer.from_pretrained(restored)
    batch = tokenizer(["a good film", "the plot was dull"], return_tensors="pt", padding=True)
    with torch.no_grad():
        want = AutoModel.from_pretrained(source).eval()(**batch).last_hidden_state
        got = AutoModel.from_pretrained(restored).eval()(**batch).last_hidden_state
    assert torch.allclose(got, want, atol=atol)
