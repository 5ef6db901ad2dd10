#!/usr/bin/env bash
# The README example as a new user runs it: the first render after installing (no bytecode of
# posecast's own) and a second one, each printing posecast's own last line (the
# job's and the whole process's real-time factors, first frame after the command started).
#   bash scripts/first_run.sh
# Compare figures only within one run of this script, on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
find posecast -name __pycache__ -type d -prune -exec rm -rf {} +
echo "$(date -u +%F) $(nproc) CPUs, $(.venv/bin/python -c 'import torch; print("torch", torch.__version__)')"
for run in first second; do
    started=$(date +%s.%N)
    lines=$(.venv/bin/posecast render examples/speech.wav examples/astronaut.png \
        -o "$work/$run.mp4" 2>&1)  # a note, if any, then the result
    took=$(python3 -c 'import sys; print(f"{float(sys.argv[2]) - float(sys.argv[1]):.2f}")' \
        "$started" "$(date +%s.%N)")
    echo "$run run ($took s by the clock):"
    echo "$lines" | sed 's/^/  /'
done
