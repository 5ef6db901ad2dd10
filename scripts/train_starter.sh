#!/usr/bin/env bash
# The bundled starter models (posecast/assets/starter_teacher and posecast/assets/starter),
# from nothing. One command per stage; RUNS (default runs/) holds everything but the bundled
# copies. Stage times measured when the bundled models were made are in their README.md files.
set -euo pipefail
RUNS=${RUNS:-runs}
DEVICE=${DEVICE:-cuda}  # the teacher's device; the bundled one was trained on an H200

# 1. data: 120 talking clips at 64x64 (two public-domain photos and drawn people speaking
#    espeak-ng sentences), 81 for training and 39 held out (people and sentences)
posecast make-dataset "$RUNS/cospeech64" --clips 120 --size 64 --seed 0

# 2. teacher: the `mini` preset (64x64, 256 tokens per frame), flow matching. On a GPU
#    (the bundled one): 1,500 steps of 16 windows, about 2.5 minutes on one H200. DEVICE=cpu
#    takes the CPU recipe instead: 1,000 steps of 4 windows, about 35 minutes on 2 cores with
#    the plain loss (a weaker teacher), with the loss weighted towards the lips, face and hands, which at this
#    budget gave better mouths and PSNR than the plain loss (docs/ABLATION.md)
if [ "$DEVICE" = cpu ]; then
    posecast train "$RUNS/cospeech64/train" --preset mini --output "$RUNS/teacher" \
        --max-steps 1000 --batch-size 4 --learning-rate 5e-4 --checkpoint-every 250 --device cpu \
        --region-alpha lips=16 --region-alpha face=1 --region-alpha hands=2
else
    posecast train "$RUNS/cospeech64/train" --preset mini --output "$RUNS/teacher" \
        --max-steps 1500 --batch-size 16 --learning-rate 5e-4 --checkpoint-every 500 \
        --device "$DEVICE"
fi

# 3. student, on the CPU: 1 step per 4-frame chunk with 4 frames of KV cache; 16 teacher
#    ODE-pair shards, 300 regression steps, then 300 DMD steps with the input-aware region loss
#    (the lips weighted 16, an edge term at 16): the paper's two stages, no region steps (they
#    draw a patch grid, docs/ABLATION.md); about 70 minutes on 2 cores beside other jobs, added
#    up, not timed as one run (31 to the 50th DMD step, then about 10 s a DMD step)
posecast distill "$RUNS/cospeech64/train" --teacher "$RUNS/teacher" --output "$RUNS/student" \
    --steps 1 --chunk 4 --window 8 --init-steps 300 --ode-pairs 16 \
    --config scripts/starter_distill.json --device cpu

# 4. bundle them (model files and cards)
cp "$RUNS/teacher/config.json" "$RUNS/teacher/model.safetensors" posecast/assets/starter_teacher/
cp "$RUNS/student/config.json" "$RUNS/student/model.safetensors" posecast/assets/starter/
