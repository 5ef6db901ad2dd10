#!/usr/bin/env bash
# One lent-GPU session (an H100 or H200, at most 15 minutes of device time in all): the stages
# below, most valuable first, each time-boxed, each printing ONE JSON line the moment it ends
#   {"stage": NAME, "status": "ok" | "timeout" | "error", "seconds": S, "figures": {...} | null}
# and appending it to the results file, so a run cut short still reports every stage it
# finished, and a second run can do only the rest (--stages).
#
#   bash scripts/gpu_check.sh                      the default stages (boxes add up to 430 s)
#   bash scripts/gpu_check.sh --stages ratio,mm-compiled   only these
#   bash scripts/gpu_check.sh --rehearse           every stage on this CPU at tiny sizes
#   --results FILE (or GPU_CHECK_RESULTS)          where the JSON lines go
#                                                  [default: $OUT/results.jsonl]
#
# Stages (name, box in seconds, what):
#   student       90  the `base` student alone: 512×512, 4 steps, flex, compiled + CUDA graphs,
#                     TAESD-sized decoder, 1 s of video (issue 17's ≥ 50 FPS)
#   ratio         90  teacher (25 steps, CFG 2, per window) against the student on 2 s
#   attention     40  `bench attention --check`: every backend against the oracle
#   mm-student    90  MimicMotion's student at 576×1024, eager, against its teacher
#   mm-teacher    60  MimicMotion's teacher at 576×1024, 16 frames, dense and input-aware
#   pytest-gpu    60  the GPU-only tests
#   mm-compiled  150  (not by default) the MimicMotion student compiled with CUDA graphs
#   distill       80  (not by default) distillation on the bundled teacher, short
# The boxes are not yet set from compile times measured on the device (no GPU session has run
# this script): the compiled stages hold the cold compile of two graphs, which took 84 s on
# the CPU for `base` (Dynamo and AOT only); state the measured times here after the first run.
#
# What the device image lacks travels in git-ignored folders named in the device tool's
# `carry`: .whl/ (wheels for CPython 3.12 manylinux x86-64) and .gpu/ffmpeg.xz. The timing
# stages need neither mediapipe (the bench portrait's keypoints are shipped in examples/) nor
# ffmpeg (a with-I/O run happens only when ffmpeg is there).
set -u
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
RESULTS=${GPU_CHECK_RESULTS:-$OUT/results.jsonl}
STAGES=student,ratio,attention,mm-student,mm-teacher,pytest-gpu
DEVICE=cuda PRESET=base MM_SIZE=576x1024 MM_PRESET=mimicmotion REHEARSE=0 FAILED=0
PYTEST_ARGS=""
while [ $# -gt 0 ]; do
    case $1 in
        --stages) STAGES=$2; shift 2 ;;
        --results) RESULTS=$2; shift 2 ;;
        --rehearse) REHEARSE=1 DEVICE=cpu PRESET=tiny MM_SIZE=64x64 MM_PRESET=mimicmotion-tiny
                    PYTEST_ARGS=--collect-only  # the GPU tests must import; they run on CUDA
                    shift ;;
        *) echo "gpu_check.sh: unknown option $1 (--stages a,b · --results FILE · --rehearse)"
           exit 2 ;;
    esac
done
PY=${PYTHON:-python3}
if [ -d .whl ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl >"$OUT/wheels.txt" 2>&1 ||
        { echo "gpu_check.sh: installing .whl/ failed (see $OUT/wheels.txt)"; exit 1; }
    export PYTHONPATH=/tmp/site:$PWD
fi
if [ -f .gpu/ffmpeg.xz ]; then
    xz -dc .gpu/ffmpeg.xz >/tmp/ffmpeg && chmod +x /tmp/ffmpeg && export POSECAST_FFMPEG=/tmp/ffmpeg
fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 COLUMNS=160
"$PY" -c "import posecast, torch" 2>/dev/null ||
    { echo "gpu_check.sh: posecast or torch does not import here; carry .whl/ (issue 30)"; exit 1; }
"$PY" -c "import json, torch; print(json.dumps({'stage': 'device', 'torch': torch.__version__,
    'device': torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'}))" \
    2>/dev/null | tee -a "$RESULTS" || true

stage() {  # stage NAME BOX COMMAND...: box it, then one JSON line (the JSON the command
           # printed on stdout, if any, is the stage's figures; stderr goes to NAME.err)
    local name=$1 box=$2 started status; shift 2
    case ",$STAGES," in *",$name,"*) ;; *) return ;; esac
    [ "$REHEARSE" = 1 ] && box=$((box * 3))  # the CPU is slower; nothing compiles to CUDA
    started=$(date +%s)
    timeout -s INT -k 10 "$box" "$@" >"$OUT/$name.txt" 2>"$OUT/$name.err"
    status=$?
    [ "$status" = 0 ] || FAILED=1
    "$PY" - "$name" "$status" "$(( $(date +%s) - started ))" "$OUT/$name" <<'PY' |
import json, sys
name, status, seconds, path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
text = open(path + ".txt", errors="replace").read()
try:
    figures = json.loads(text)
except ValueError:  # the last JSON line, if any
    figures = None
    for line in reversed(text.splitlines()):
        try:
            figures = json.loads(line)
            break
        except ValueError:
            continue
word = "ok" if status == 0 else "timeout" if status in (124, 130, 137) else "error"
row = {"stage": name, "status": word, "seconds": seconds, "figures": figures}
if word != "ok":
    row["last_line"] = (open(path + ".err", errors="replace").read().strip().splitlines()
                        or [""])[-1]
print(json.dumps(row))
PY
        tee -a "$RESULTS"
}

stage student 90 "$PY" -m posecast bench render --preset "$PRESET" --seconds 1 --skip-teacher --json \
    --device "$DEVICE"
stage ratio 90 "$PY" -m posecast bench render --preset "$PRESET" --seconds 2 --json --device "$DEVICE"
stage attention 40 "$PY" -m posecast bench attention --check --json --device "$DEVICE"
stage mm-student 90 "$PY" -m posecast bench render --preset "$MM_PRESET" --size "$MM_SIZE" \
    --seconds 2 --teacher-steps 25 --no-compile --json --device "$DEVICE"
stage mm-teacher 60 "$PY" -m posecast bench teacher --preset "$MM_PRESET" --size "$MM_SIZE" \
    --frames 16 --steps 25 --repeats 1 --json --device "$DEVICE"
stage pytest-gpu 60 "$PY" -m pytest -m gpu -q -p no:cacheprovider $PYTEST_ARGS tests
stage mm-compiled 150 "$PY" -m posecast bench render --preset "$MM_PRESET" --size "$MM_SIZE" \
    --seconds 2 --skip-teacher --compile --json --device "$DEVICE"
stage distill 80 "$PY" -m posecast distill .gpu/train --teacher posecast/assets/starter_teacher \
    --out /tmp/posecast_runs/student --student-steps 1 --chunk 4 --window 8 --init-steps 20 \
    --ode-pairs 4 --config scripts/starter_distill.json --max-steps 10 --overwrite --json \
    --device "$DEVICE"
echo "gpu_check.sh: results in $RESULTS"
exit "$FAILED"
