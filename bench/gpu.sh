#!/usr/bin/env bash
# All GPU checks and timings in one call, for a machine with an NVIDIA GPU:
#   bash bench/gpu.sh            (writes the benchmark table to bench/latest.md)
# bench/gpu_check.py's kernel table gets a torch column where PyTorch with CUDA is in /tmp/fastae-gpu.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv /tmp/fastae-gpu && . /tmp/fastae-gpu/bin/activate
python -m pip install --quiet -e ".[cuda,test]"
nvidia-smi --query-gpu=name,memory.total --format=csv
python -c "import fastae; print('backends:', fastae.backends()); fastae.warmup('cuda')"
python bench/gpu_check.py 2>&1 | tee "${OUT:-/tmp}/gpu_check.txt"  # the cuda tests, then kernel timings
python -m pytest --benchmark -q
cp bench/latest.md "${OUT:-/tmp}/latest.md" 2>/dev/null || true
