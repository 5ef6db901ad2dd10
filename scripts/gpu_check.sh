#!/usr/bin/env bash
# One lent-GPU session, at most 10 minutes of one H100/H200 (the stage boxes add up to 590 s;
# issues 17, 18 and 19's figures). Every stage is
# time-boxed and prints its figures as soon as they exist (tee'd to stdout and $OUT/log.txt),
# so a run cut short still reports what it reached:
#   1. the GPU-only tests and `bench attention --check` (every backend against the oracle);
#   2. (with ATTENTION=1) input-aware attention at 36,864 tokens (16 frames of 48 × 48), K = 4,
#      against dense SDPA, forward and forward + backward, sorting included in the timed region;
#   3. the `base` student alone (512×512, 4 steps, flex, compiled + CUDA graphs, TAESD), JSON;
#   4. teacher (25 steps, CFG 2, per window) against the student on 2 s, JSON with the ratio;
#   5. the paper's teacher, MimicMotion, at real size, dense and input-aware (random weights;
#      paper: 1.93 FPS for the off-the-shelf teacher on an H100);
#   6. the paper's student on MimicMotion (random weights, 4 steps, input-aware, TAESD-sized
#      fast decoder) at 576×1024: eager against its teacher, then compiled with CUDA graphs
#      (its default on CUDA; two UNet graphs to compile, hence the longer box); eager at
#      512×512 (paper: 25.3 FPS, 13.1×);
#   7. (with DISTILL=1) distillation on the bundled teacher (starter recipe, short), samples/s
#      per stage, and the recompiles torch reports (TORCH_LOGS=recompiles).
#
# Carried from the workstation (git-ignored, named in the device tool's `carry`):
#   .whl/  wheels of what the device image lacks, for CPython 3.12 manylinux x86-64
#          (`pip download --no-deps --only-binary=:all: --python-version 3.12 …`): diffusers
#          importlib_metadata lazy-importer zipp, transformers tokenizers regex, soundfile cffi
#          pycparser soxr, ffmpeg-python
#          future, typer click pydantic pydantic_core annotated-types typing-inspection
#          typing_extensions shellingham rich (versions as in our venv)
#   .gpu/ffmpeg.xz  a static ffmpeg (imageio-ffmpeg 0.5.1's binary, xz-compressed: 19 MB)
#   .gpu/train/     a `posecast make-dataset --size 64` training split with its keypoint cache
# Stage lengths scale with SCALE (1 = the real run; a CPU dry run uses less); PRESET picks the
# benchmarked model (base; a CPU dry run uses mini).
set -u
OUT=${OUT:-/tmp/gpu_out}
SCALE=${SCALE:-1}
DEVICE=${DEVICE:-cuda}
PRESET=${PRESET:-base}
mkdir -p "$OUT"
LOG="$OUT/log.txt"
runs=/tmp/posecast_runs
mkdir -p $runs
secs() { python3 -c "print(max(5, int($1 * $SCALE)))"; }
stage() {  # stage NAME SECONDS COMMAND...: time-boxed, output shown live and logged
    local name=$1 limit; limit=$(secs "$2"); shift 2
    echo "=== $name (limit ${limit}s) $(date +%T)" | tee -a "$LOG"
    timeout -s INT -k 10 "$limit" "$@" 2>&1 | grep -v -E "Warning|warn\(|^\s*$" | tee -a "$LOG"
    echo "=== $name exit ${PIPESTATUS[0]} $(date +%T)" | tee -a "$LOG"
}

if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl >>"$LOG" 2>&1 || echo "wheel install failed" | tee -a "$LOG"
    export PYTHONPATH=/tmp/site:$PWD
fi
if [ -f .gpu/ffmpeg.xz ]; then
    xz -dc .gpu/ffmpeg.xz >/tmp/ffmpeg && chmod +x /tmp/ffmpeg && export POSECAST_FFMPEG=/tmp/ffmpeg
fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 COLUMNS=160
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch; print('torch', torch.__version__)"; } 2>&1 | tee -a "$LOG" || true

stage "pytest -m gpu" 60 python3 -m pytest -m gpu -q -p no:cacheprovider tests
stage "bench attention --check" 40 python3 -m posecast bench attention --check --device "$DEVICE"
if [ "${ATTENTION:-0}" = 1 ]; then
    stage "bench attention 36,864 tokens K=4" 40 python3 -m posecast bench attention \
        --grids 48 --k-frames 4 --device "$DEVICE"
fi
stage "bench render $PRESET student (1 s)" 50 python3 -m posecast bench render \
    --preset "$PRESET" --seconds 1 --skip-teacher --json --device "$DEVICE"
stage "bench render $PRESET teacher vs student (2 s)" 80 python3 -m posecast bench render \
    --preset "$PRESET" --seconds 2 --json --device "$DEVICE"
stage "bench teacher mimicmotion (576x1024, 16 and 72 frames)" 70 python3 -m posecast bench \
    teacher --preset mimicmotion --frames 16,72 --steps 25 --repeats 1 --device "$DEVICE"
stage "bench render mimicmotion student, eager (576x1024, 2 s)" 90 python3 -m posecast bench \
    render --preset mimicmotion --size 576x1024 --seconds 2 --teacher-steps 25 --no-compile \
    --json --device "$DEVICE"
stage "bench render mimicmotion student, compiled (576x1024, 2 s)" 150 python3 -m posecast \
    bench render --preset mimicmotion --size 576x1024 --seconds 2 --skip-teacher --compile \
    --json --device "$DEVICE"
stage "bench render mimicmotion student, eager (512x512, 2 s)" 50 python3 -m posecast bench \
    render --preset mimicmotion --size 512x512 --seconds 2 --skip-teacher --no-compile --json \
    --device "$DEVICE"
if [ "${DISTILL:-0}" = 1 ] && [ -d .gpu/train ]; then
    TORCH_LOGS=recompiles stage "distill (starter recipe, short)" 80 \
        python3 -m posecast distill .gpu/train --teacher posecast/assets/starter_teacher \
        --out $runs/student --student-steps 1 --chunk 4 --window 8 --init-steps 100 \
        --ode-pairs 8 --config scripts/starter_distill.json --max-steps 40 --region-steps 20 \
        --device "$DEVICE"
    python3 - "$runs/student/train_log.jsonl" <<'PY' 2>&1 | tee -a "$LOG"
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
for phase in dict.fromkeys(r["phase"] for r in rows):
    rates = [r["samples_per_second"] for r in rows if r["phase"] == phase]
    print(f"distill {phase}: median {statistics.median(rates):.2f} samples/s over "
          f"{len(rates)} steps")
PY
    echo "recompiles logged: $(grep -c 'Recompiling' "$LOG")" | tee -a "$LOG"
fi
