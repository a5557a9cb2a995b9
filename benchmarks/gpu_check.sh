#!/usr/bin/env bash
# Run on a machine with a CUDA GPU (tests never need one): the scale benchmark with --device cuda
# at the Hub sizes (ViT-B/16 and ResNet-50 at 224², DistilBERT at sequence 128), then the test
# suite. Everything it prints goes to $OUT (default ./gpu_check) as well:
#   scale_cuda.json / scale_cuda.log   the benchmark's rows and its table
#   pytest.log                          the test suite's output
# Usage, from the repository root:  bash benchmarks/gpu_check.sh [--quick]
#   --quick: 64² images and the two cheaper stages' defaults (a few minutes), for a first look.
# Python: $PYTHON, else .venv/bin/python, else python3. It needs a CUDA build of torch.
set -euo pipefail

cd "$(dirname "$0")/.."
OUT="${OUT:-gpu_check}"
mkdir -p "$OUT"
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "gpu_check: $PY has no torch with a usable CUDA device (torch.cuda.is_available() is not True); nothing to check here" >&2
  exit 2
fi
"$PY" -m hf_fairquant.quantization.warmup  # optimum-quanto builds its C++ extension once, here
"$PY" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, torch.cuda.get_device_name(0))' | tee "$OUT/device.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >> "$OUT/device.txt" 2>/dev/null || true

SIZE=224
EXAMPLES=64
if [[ "${1:-}" == "--quick" ]]; then SIZE=64; EXAMPLES=32; fi

status=0
# 1. every stage at Hub size on the GPU (peak memory is torch.cuda.max_memory_allocated)
"$PY" benchmarks/scale.py --device cuda --models vit-b16 distilbert resnet50 --examples "$EXAMPLES" \
  --image-size "$SIZE" --seq-len 128 --batch-size 32 --sample-layers 4 --hessian-probes 4 \
  --out "$OUT/scale_cuda.json" 2>&1 | tee "$OUT/scale_cuda.log" || status=1

# 2. the test suite (CPU tests; a CUDA device must not change any result)
"$PY" -m pytest -q -x tests 2>&1 | tee "$OUT/pytest.log" || status=1

echo "gpu_check: done (status $status); results in $OUT/"
exit $status
