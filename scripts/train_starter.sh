#!/usr/bin/env bash
# The bundled starter model (posecast/assets/starter), from nothing, on a 2-core CPU.
# One command per stage; RUNS (default runs/) holds everything but the bundled copy.
# Stage times measured on the 2-core CPU that made the bundled model are in its README.md.
set -euo pipefail
RUNS=${RUNS:-runs}

# 1. data: 60 talking clips (2 photos, 8 drawn people; espeak-ng speech), 128x128, held-out split
posecast make-dataset "$RUNS/cospeech" --clips 60 --size 128 --seed 0

# 2. teacher: the `mini` preset (64x64, 256 tokens per frame), flow matching
posecast train "$RUNS/cospeech/train" --preset mini --out "$RUNS/teacher" --max-steps 400 \
    --batch-size 4 --learning-rate 1e-3 --checkpoint-every 200 --device cpu

# 3. student: 2 steps (real time on the CPU), chunks of 4 frames with 4 frames of KV cache,
#    ODE-pair initialisation, then DMD with the input-aware region loss
posecast distill "$RUNS/cospeech/train" --teacher "$RUNS/teacher" --out "$RUNS/student" \
    --student-steps 2 --chunk 4 --window 8 --init-steps 300 --ode-pairs 16 \
    --config scripts/starter_distill.json --device cpu

# 4. bundle it (model files and card only)
cp "$RUNS/student/config.json" "$RUNS/student/model.safetensors" posecast/assets/starter/
