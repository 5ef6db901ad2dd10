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
# The boxes are not yet set from compile times measured on the device (no GPU session has run
# this script): the compiled stages hold the cold compile of two graphs, which took 84 s on
# the CPU for `base` (Dynamo and AOT only); state the measured times here after the first run.
# The rehearsal on this 2-core CPU from a fresh clone (2026-12-07, .venv-gpu/ built from the pip
# cache): every stage ok in 167 s (student 18, ratio 8, attention 24, mm-student 19,
# mm-teacher 6, pytest-gpu 4 (collection only), mm-compiled 88: Inductor's C++ at 64×64).
# Again after librosa left the wheels (same day, warm caches): ok in 96 s (4, 4, 13, 18, 6, 4,
# 47).
#
# What the device image lacks travels as wheels in .whl/ (git-ignored; `bash
# scripts/gpu_wheels.sh` fetches them, 8.8 MiB), named in the device tool's `carry`:
#   run(command="bash scripts/gpu_check.sh", carry=[".whl"], timeout_s=540)
# The timing stages need neither mediapipe (the bench portrait's keypoints are shipped in
# examples/) nor ffmpeg (not carried: `bench render` leaves its with-I/O run out without one).
# The script stops at once, with one line, if .whl/ or a module it needs is missing.
#
# --rehearse builds (once) .venv-gpu/ with the image's versions where this machine allows:
# CPython 3.12, torch 2.11.0 (PyPI's CUDA build: it runs on the CPU), numpy 2.5.2,
# huggingface_hub 1.33.0, transformers 5.17.0, safetensors 0.8.0 and the other image packages
# posecast imports; it installs .whl/ into it exactly as the real run does, runs every stage
# at tiny size on the CPU, prints the carried payload's size, and exits 0 only if all ran.
set -u
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
RESULTS=${GPU_CHECK_RESULTS:-$OUT/results.jsonl}
DEFAULT_STAGES=student,ratio,attention,mm-student,mm-teacher,pytest-gpu STAGES=""
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
# a rehearsal runs every stage (the compiled one too) unless told which
[ -n "$STAGES" ] || { [ "$REHEARSE" = 1 ] && STAGES=$DEFAULT_STAGES,mm-compiled ||
                      STAGES=$DEFAULT_STAGES; }
PY=${PYTHON:-python3}
if [ "$REHEARSE" = 1 ]; then
    PY=$PWD/.venv-gpu/bin/python
    if [ ! -x "$PY" ]; then
        PY312=""
        for candidate in python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python3.12; do
            "$candidate" --version >/dev/null 2>&1 && { PY312=$candidate; break; }
        done  # (a pyenv shim may exist and still refuse to run)
        [ -n "$PY312" ] || { echo "gpu_check.sh: --rehearse needs a python3.12"; exit 1; }
        echo "gpu_check.sh: building .venv-gpu/ with the image's versions (once, a few minutes)"
        { "$PY312" -m venv .venv-gpu && .venv-gpu/bin/pip install -q torch==2.11.0 numpy==2.5.2 \
              huggingface_hub==1.33.0 transformers==5.17.0 safetensors==0.8.0 typer rich scipy \
              numba opencv-python-headless pillow pyyaml pytest scikit-learn joblib msgpack \
              lazy-loader requests regex; } >"$OUT/venv.txt" 2>&1 ||
            { echo "gpu_check.sh: building .venv-gpu/ failed (see $OUT/venv.txt)"; exit 1; }
    fi
    [ -d .whl ] || bash scripts/gpu_wheels.sh >/dev/null || exit 1
    payload=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
    wheels=$(du -cb .whl/*.whl | tail -1 | cut -f1)
    awk -v t="$payload" -v w="$wheels" 'BEGIN { printf "gpu_check.sh: carried payload %.1f MiB \
(working tree %.1f MiB + .whl/ %.1f MiB; the device tool takes 64)\n", (t + w) / 2^20, t / 2^20,
        w / 2^20 }'
fi
[ -d .whl ] || { echo "gpu_check.sh: .whl/ is missing: run bash scripts/gpu_wheels.sh and carry .whl"
                 exit 1; }
SITE=${TMPDIR:-/tmp}/posecast_site  # not under $OUT: everything there is copied back
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" .whl/*.whl >"$OUT/wheels.txt" 2>&1 ||
    { echo "gpu_check.sh: installing .whl/ failed (see $OUT/wheels.txt)"; exit 1; }
export PYTHONPATH=$SITE:$PWD
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 COLUMNS=160
missing=$("$PY" - <<'PY'
import importlib
needed = ["torch", "numpy", "scipy", "cv2", "PIL", "yaml", "typer", "rich",
          "safetensors", "huggingface_hub", "transformers", "diffusers", "soundfile",
          "soxr", "ffmpeg", "pytest", "posecast.cli", "posecast.dit.family",
          "posecast.mimicmotion.family"]
failed = []
for name in needed:
    try:
        importlib.import_module(name)
    except Exception as error:  # noqa: BLE001 - any failure means the stage cannot run
        failed.append(f"{name} ({type(error).__name__}: {error})"[:160])
print("; ".join(failed))
PY
)
[ -z "$missing" ] || { echo "gpu_check.sh: cannot import: $missing"; exit 1; }
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
echo "gpu_check.sh: results in $RESULTS"
exit "$FAILED"
