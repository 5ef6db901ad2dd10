#!/usr/bin/env bash
# The wheels the GPU device image lacks, for CPython 3.12 on manylinux x86-64, into .whl/
# (git-ignored; name it in the device tool's `carry`). The image already holds torch, numpy,
# scipy, numba, scikit-learn, joblib, msgpack, lazy-loader, transformers, huggingface_hub,
# safetensors, pillow, opencv-headless, typer, rich, pyyaml, regex, requests and pytest
# (KINDS.md); posecast needs, beyond those:
#   soxr, soundfile (+ cffi, pycparser)   audio reading and resampling
#   diffusers (+ importlib_metadata)   VAEs, SVD's UNet and schedulers (MimicMotion stages)
#   ffmpeg-python (+ future)    imported by posecast.media
# Not carried: mediapipe (the timing stages use the bench portrait's shipped keypoints) and
# the ffmpeg binary (imageio-ffmpeg's is 65 MiB, 48 MiB even under xz -6), so on the device
# `bench render` times without I/O and leaves its with-I/O run out.
# The versions are the ones this project is tested with; transformers is the image's own
# (5.17, which accepts its huggingface_hub 1.33; a newer one refuses it), so it is not carried.
#
#   bash scripts/gpu_wheels.sh      fetch, then print each wheel's size and the total
# Exits non-zero with one line if a download fails or the folder exceeds 48 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
BUDGET_MIB=48
WHEELS=(soxr==1.1.0 soundfile==0.14.0 cffi==2.1.1 pycparser==3.12
        diffusers==0.42.1 importlib_metadata==10.2.0 ffmpeg-python==0.2.0 future==1.0.0)
rm -rf .whl && mkdir .whl
if ! python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --abi cp312 --abi abi3 --abi none \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any \
        -d .whl "${WHEELS[@]}" >.whl/download.log 2>&1; then
    echo "gpu_wheels.sh: download failed: $(grep -m1 -i error .whl/download.log)"
    exit 1
fi
rm .whl/download.log
du -b .whl/*.whl | sort -rn | awk '{printf "%8.1f MiB  %s\n", $1 / 2^20, $2}'
total=$(du -cb .whl/*.whl | tail -1 | cut -f1)
awk -v t="$total" -v b="$BUDGET_MIB" 'BEGIN { printf "%8.1f MiB  total (budget %d MiB)\n", t / 2^20, b }'
if [ "$total" -gt $((BUDGET_MIB * 1024 * 1024)) ]; then
    echo "gpu_wheels.sh: .whl/ exceeds $BUDGET_MIB MiB"
    exit 1
fi
