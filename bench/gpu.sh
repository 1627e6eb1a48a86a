#!/usr/bin/env bash
# One command for the GPU figures of BENCHMARKS.md (sarflow and both peers, batch 2048 and 16384).
# Run on a machine with CUDA after `make setup` and `.venv/bin/pip install -e '.[bench]'`
# (or any venv with a CUDA build of torch). Output: bench/gpu-<date>.log
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
log="bench/gpu-$(date +%Y%m%d-%H%M).log"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
  "$PY" bench/train_speed.py --device cuda --batch 2048 --threads 16
  "$PY" bench/train_speed.py --device cuda --batch 16384 --threads 16
  "$PY" bench/train_speed.py --device cuda --batch 16384 --threads 16 --frameworks sarflow --rows 4000000
} 2>&1 | tee "$log"
