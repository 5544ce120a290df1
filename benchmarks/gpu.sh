#!/usr/bin/env bash
# The prepared GPU check (one run on a machine with a CUDA GPU, about 10 minutes on an H200):
#   1. benchmarks/speed.py for both presets in float32, then with bfloat16 autocast and a compiled generator;
#   2. 200 iterations of `fast` on real chest X-rays in float32 and in bfloat16, to check that bfloat16
#      gives the same accuracy within noise.
# Usage: bash benchmarks/gpu.sh [DATA] [OUT]
#   DATA: a Med-AD folder (default ../shared/data/medad-pneumonia64, or shared/data/... inside the checkout);
#         without one, the synthetic data is used and the output says so.
#   OUT:  where results go (default benchmarks/runs/gpu).
# Needs medsagan's dependencies there (pip install -e .; without internet, carry wheels of the missing ones,
# e.g. pydicom).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
out=${2:-benchmarks/runs/gpu}
mkdir -p "$out"
data=${1:-}
for candidate in "$data" ../shared/data/medad-pneumonia64 shared/data/medad-pneumonia64; do
    if [ -n "$candidate" ] && [ -f "$candidate/data.json" ]; then data=$candidate; break; fi
    data=""
done
python -c "import medsagan, click, sklearn, yaml" || {
    echo "medsagan's dependencies are missing: pip install -e . (or carry wheels) first" >&2; exit 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$out/gpu.txt"

echo "== speed: float32, then bfloat16 autocast + compiled generator"
python benchmarks/speed.py --device cuda --presets fast paper --steps 50 --markdown | tee "$out/speed.txt"
python benchmarks/speed.py --device cuda --presets fast paper --steps 50 --markdown \
    --set train.precision=bfloat16 train.compile=true | tee -a "$out/speed.txt"

echo "== accuracy: 200 iterations of fast, float32 against bfloat16"
if [ -z "$data" ]; then
    echo "no Med-AD data found: using the synthetic data (a smoke check, not an accuracy figure)" | tee -a "$out/gpu.txt"
    data=synthetic
fi
for precision in float32 bfloat16; do
    run="$out/fast-200-$precision"
    rm -rf "$run"
    python -m medsagan train --preset fast --data "$data" --out "$run" --no-progress \
        train.iterations=200 train.validate_every=50 train.checkpoint_every=100 train.device=cuda train.precision=$precision
    python -m medsagan evaluate "$run" --device cuda --json | tee -a "$out/accuracy.txt"
done
