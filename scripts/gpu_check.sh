#!/usr/bin/env bash
# The `distill` workflow on a GPU (its defaults: 800 labelled sentences, the
# other 8,268 unlabelled, a MiniLM student), each step timed.
#
# For a GPU machine that has torch and transformers but no spaCy and no
# network. Carry along:
#   .whl/    wheels of spacy, thinc and their pure deps, datasets, the [onnx]
#            extra (onnx, onnx_ir, onnxscript, onnxruntime, ml_dtypes) and
#            spacy_dekd (python -m pip wheel --no-deps -w .whl .)
#   assets/  all-mpnet-base-v2/, all-MiniLM-L6-v2/ and movies/ from scripts/fetch_assets.py
# Run from the repository root:  bash scripts/gpu_check.sh
# On two GPUs or more it also times torchrun with 1 and 2 processes.
set -euo pipefail
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python3 -c "import torch, transformers, spacy, spacy_dekd; print('GPU:', torch.cuda.get_device_name(0), '| torch', torch.__version__, '| transformers', transformers.__version__, '| spacy', spacy.__version__)"
VARS="--vars.gpu_id 0"
for step in corpus teacher assistant student quantize evaluate benchmark; do
  start=$(date +%s.%N)
  python3 -m spacy project run "$step" . $VARS > "/tmp/gpu_check_$step.log" 2>&1 || { tail -20 "/tmp/gpu_check_$step.log"; exit 1; }
  printf '%-10s %6.1fs\n' "$step" "$(echo "$(date +%s.%N) - $start" | bc)"
done
python3 - <<'PY'
import json
for name in ("teacher", "assistant", "student", "student-int8"):
    scores = json.load(open(f"metrics/{name}.json"))
    print(f"{name:10s} test accuracy {100 * scores['cats_accuracy']:.2f}")
bench = json.load(open("metrics/benchmark.json"))["results"]
for name, r in bench.items():
    print(f"{name:10s} {r['words_per_second']:.0f} words/s ({r['speedup']:.2f}x)")
PY
# Data-parallel distillation (torchrun, nccl) where the machine has two GPUs or more.
n_gpus=$(python3 -c "import torch; print(torch.cuda.device_count())")
if [ "$n_gpus" -ge 2 ]; then
  python3 scripts/bench_parallel.py training/teacher/model-best configs/dekd_minilm.cfg \
    --nproc 1 2 --steps 20 --repeats 2 --gpu-id 0
else
  echo "one GPU: the data-parallel check needs two"
fi
