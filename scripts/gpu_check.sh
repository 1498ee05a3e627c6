#!/usr/bin/env bash
# The `distill` workflow on a GPU, each step timed; then, side by side with
# its student, the rivals and the students of the pool issue over 3 seeds:
# the MiniLM fine-tuned on the labels alone, the default student, students
# from the sentences and 4 variants of each (44,382 texts) under POOL_BUDGET
# (0.5: about 22,600 teacher answers), and three selectors where the pool is
# far larger than the budget; last, the benchmark alone.
#
# For a GPU machine that has torch and transformers but no spaCy and no
# network, with at most 64 MiB carried a call. What it needs lies in .dev/
# (git-ignored), made here:
#   .dev/site.tar.xz  python scripts/pack_for_device.py site .dev/site.tar.xz:
#                     spaCy, thinc, datasets, pydantic and the other packages
#                     that machine lacks, for its Python, with spacy_dekd's
#                     entry points (13 MB)
#   .dev/mpnet/, .dev/minilm/   python scripts/pack_for_device.py pack ...
#                     (MPNet as int8 rows, 110 MB in two parts, the second
#                     moved to .dev/mpnet_part1/; MiniLM in float16, 46 MB)
#   .dev/movies.txt   assets/movies/movieReviewSnippets_GroundTruth.txt
#   .dev/variants.txt corpus/movies/pool4/variants.txt (scripts/augment_text.py)
#   .dev/lang.tar.xz  where site.tar.xz was cut to spaCy's English alone:
#                     spacy/lang/ from the spaCy wheel (spaCy's registry
#                     imports other languages' tokenizers), unpacked over it
# A carried path is gone at the next call; what a command writes stays while
# the machine is warm. So three calls, each within 30 s of the last:
#   1. carry .dev/site.tar.xz .dev/minilm: unpack them (tar -xJf ... -C
#      /tmp/site; pack_for_device.py unpack .dev/minilm assets/all-MiniLM-L6-v2)
#   2. carry .dev/mpnet (its first part): cp -r .dev/mpnet /tmp/mpnet
#   3. carry .dev/mpnet_part1 .dev/movies.txt .dev/variants.txt
#      [.dev/lang.tar.xz]: this script
# Run from the repository root:  [PARTS="pool"] bash scripts/gpu_check.sh [SECONDS]
# (SECONDS: when steps are stopped, from the start; 540 by default)
# Figures go to $OUT (or /tmp/gpu_check): gpu_check.txt, and logs.tar.gz
# with a log a step and the metrics.
set -uo pipefail
DEADLINE=$(( $(date +%s) + ${1:-540} ))
OUT=${OUT:-/tmp/gpu_check}
POOL_BUDGET=${POOL_BUDGET:-0.5}
LOGS=/tmp/gpu_check_logs
mkdir -p "$OUT" "$LOGS"
trap 'cp metrics/*.json "$LOGS/" 2>/dev/null; tar -czf "$OUT/logs.tar.gz" -C "$LOGS" .' EXIT
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1

say() { echo "$*" | tee -a "$OUT/gpu_check.txt"; }
left() { echo $(( DEADLINE - $(date +%s) )); }
# step NAME COMMAND...: run it within the time left, log it, say how long it took.
step() {
  local name=$1; shift
  local start; start=$(date +%s%N)
  if [ "$(left)" -le 10 ]; then say "$name: skipped, out of time"; return 1; fi
  if timeout "$(left)" "$@" > "$LOGS/$name.log" 2>&1; then
    say "$(printf '%-24s %7.1f s' "$name" "$(( ($(date +%s%N) - start) / 1000000 ))e-3")"
  else
    say "$name: FAILED (exit $?)"; tail -5 "$LOGS/$name.log" | tee -a "$OUT/gpu_check.txt"; return 1
  fi
}

if [ -f .dev/site.tar.xz ] && [ ! -d /tmp/site/spacy ]; then
  mkdir -p /tmp/site && tar -xJf .dev/site.tar.xz -C /tmp/site
fi
if [ -f .dev/lang.tar.xz ]; then tar -xJf .dev/lang.tar.xz -C /tmp/site; fi
export PYTHONPATH="$PWD:/tmp/site"
# `python` for the project's commands: the python3 that has torch (a wrapper, not
# a link, so that it keeps its virtual environment).
mkdir -p /tmp/bin && printf '#!/bin/sh\nexec %s "$@"\n' "$(command -v python3)" > /tmp/bin/python
chmod +x /tmp/bin/python && export PATH="/tmp/bin:$PATH"
if [ -d /tmp/mpnet ] && [ -d .dev/mpnet_part1 ] && [ ! -d .dev/mpnet ]; then
  mkdir -p .dev/mpnet && cp /tmp/mpnet/* .dev/mpnet_part1/* .dev/mpnet/
fi
for pair in mpnet:all-mpnet-base-v2 minilm:all-MiniLM-L6-v2; do
  if [ -d ".dev/${pair%%:*}" ] && [ ! -f "assets/${pair#*:}/model.safetensors" ]; then
    python scripts/pack_for_device.py unpack ".dev/${pair%%:*}" "assets/${pair#*:}" > /dev/null || exit 1
  fi
done
if [ -f .dev/movies.txt ]; then mkdir -p assets/movies && cp .dev/movies.txt assets/movies/movieReviewSnippets_GroundTruth.txt; fi
python -c "import torch, transformers, spacy, spacy_dekd; print('GPU:', torch.cuda.get_device_name(0), '| torch', torch.__version__, '| transformers', transformers.__version__, '| spacy', spacy.__version__)" | tee -a "$OUT/gpu_check.txt" || exit 1

# The GPU tests (tiny models) first, unless told they ran: GPU_TESTS=0.
if [ "${GPU_TESTS:-1}" = 1 ]; then
  step gpu-tests python -m pytest -q -p no:cacheprovider tests/cli/test_gpu.py || exit 1
fi


# The workflow's steps (quantize is ONNX Runtime on the CPU: not a GPU check).
GPU="--vars.gpu_id 0"
for name in corpus teacher assistant; do
  step "$name" python -m spacy project run "$name" . $GPU || exit 1
done

# Then the workflow's student and the pool issue's runs side by side: each is
# bound by tokenizing and making Docs on a CPU core, not by the GPU, so one
# process a run (two torch threads each) takes about as long as one alone.
# The parts, in the order PARTS names them (all four when unset; none when
# empty, so that a call can stop after the workflow):
#   no-teacher  the MiniLM fine-tuned on the labels alone (no teacher: one
#               run serves every teacher), seeds 0-2
#   pool        students from the sentences and 4 variants each, seeds 0-2
#   seeds       the default student's seeds 1 and 2
#   selection   entropy, random and diverse entropy at the 44,382-text pool
#               under SELECT_BUDGET (0.05: about 2,260 answers, the pool 20x
#               them), seeds 0-2
export OMP_NUM_THREADS=2
SELECT_BUDGET=${SELECT_BUDGET:-0.05}
DISTILL="python -m spacy distill training/teacher/model-best --gpu-id 0 --components.textcat.model.max_length 0"
POOL="--paths.unlabeled corpus/movies/pool4"
# seeds NAME COMMAND...: one run a seed, side by side, "{s}" in COMMAND the seed.
seeds() {
  local name=$1; shift
  for seed in ${SEEDS:-0 1 2}; do step "$name-s$seed" "${@//\{s\}/$seed}" & done
}
step student python -m spacy project run student . $GPU &
for part in ${PARTS-no-teacher pool seeds selection}; do
  case $part in
    no-teacher)
      seeds no-teacher python scripts/train_teacher.py configs/no_teacher.cfg training/no_teacher/s{s} \
        --epochs 5 --max-length 0 --check false --gpu-id 0 --system.seed {s} ;;
    pool|selection)
      mkdir -p corpus/movies/pool4 && cp .dev/variants.txt corpus/movies/unlabeled.txt corpus/movies/pool4/ || continue
      if [ "$part" = pool ]; then
        seeds pool4 $DISTILL configs/dekd_minilm.cfg --output training/pool4/s{s} --system.seed {s} $POOL \
          --distillation.teacher_budget "$POOL_BUDGET"
      else
        for config in dekd_minilm select_random_minilm select_diverse_minilm; do
          seeds "$config" $DISTILL configs/$config.cfg --output training/selection/$config-s{s} --system.seed {s} \
            $POOL --distillation.teacher_budget "$SELECT_BUDGET" --distillation.pool_sample 10000
        done
      fi ;;
    seeds) SEEDS="1 2" seeds student $DISTILL configs/dekd_minilm.cfg --output training/student_s{s} --system.seed {s} ;;
    *) say "PARTS: no part '$part' (no-teacher, pool, seeds, selection)" ;;
  esac
done
wait
unset OMP_NUM_THREADS

# Every model scored on the test set in one process (`name?=`: those that ran).
models="teacher=training/teacher/model-best student=training/student/model-best"
for seed in 0 1 2; do
  models+=" no-teacher-s$seed?=training/no_teacher/s$seed/model-best pool4-s$seed?=training/pool4/s$seed/model-best"
  models+=" student-s$seed?=training/student_s$seed/model-best"
  for config in dekd_minilm select_random_minilm select_diverse_minilm; do
    models+=" $config-s$seed?=training/selection/$config-s$seed/model-best"
  done
done
step evaluate python scripts/evaluate.py corpus/movies/test.spacy metrics $models --gpu-id 0 || exit 1
python - <<'PY' | tee -a "$OUT/gpu_check.txt"
import glob, json, os
for path in sorted(glob.glob("metrics/*.json")):
    name = os.path.basename(path)[:-5]
    data = json.load(open(path))
    if "cats_accuracy" in data:
        print(f"{name:16s} test accuracy {100 * data['cats_accuracy']:.1f}")
for path in sorted(glob.glob("training/*/metrics.json") + glob.glob("training/*/*/metrics.json")):
    m = json.load(open(path))
    if "teacher_forward_passes" in m:
        print(f"{path:40s} teacher answers {m['teacher_forward_passes']}, steps {m['steps']}")
PY
# Last, alone on the machine: the workflow's words/s.
step benchmark python scripts/benchmark.py corpus/movies/test.spacy teacher=training/teacher/model-best \
  student=training/student/model-best --gpu-id 0 --repeats 2 --output metrics/benchmark.json &&
python - <<'PY' | tee -a "$OUT/gpu_check.txt"
import json
for name, r in json.load(open("metrics/benchmark.json"))["results"].items():
    print(f"{name:10s} {r['words_per_second']:.0f} words/s ({r['speedup']:.2f}x)")
PY
