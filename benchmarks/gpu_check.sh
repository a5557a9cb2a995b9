#!/usr/bin/env bash
# Run on a machine with a CUDA GPU (tests never need one): the scale benchmark with --device cuda
# at the Hub sizes (ViT-B/16 and ResNet-50 at 224², DistilBERT at sequence 128, the LM shape), the
# audit sharded over the GPUs under accelerate (compared with one process), then the test suite.
# Everything it prints goes to $OUT (default ./gpu_check) as well:
#   scale_cuda.json / scale_cuda.log   the benchmark's rows and its table
#   sharded.log                         the sharded audit: one process vs N, and whether they agree
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
"$PY" benchmarks/scale.py --device cuda --models vit-b16 distilbert resnet50 lm --examples "$EXAMPLES" \
  --image-size "$SIZE" --seq-len 128 --batch-size 32 --sample-layers 4 --hessian-probes 4 \
  --out "$OUT/scale_cuda.json" 2>&1 | tee "$OUT/scale_cuda.log" || status=1

# 2. the audit sharded over the GPUs (accelerate launch -m hf_fairquant.cli audit): N ranks, one per
#    GPU (NCCL), each evaluating its share of the batches; the report must equal the one of a single
#    process on one GPU (torch.distributed.run with one process: the model goes to cuda:0), timings
#    aside. With one GPU, two NCCL ranks cannot share it: the check then runs on two CPU ranks (gloo)
#    against one CPU process, the GPU hidden.
NGPU=$("$PY" -c 'import torch; print(torch.cuda.device_count())')
SHARD="$OUT/sharded"
rm -rf "$SHARD" && mkdir -p "$SHARD"
"$PY" - "$SHARD/fp_model" <<'PYEOF'
import sys, torch
from transformers import ViTConfig, ViTForImageClassification
torch.manual_seed(0)  # ViT-B/16's width and depth on the offline digits images (8×8, one channel)
ViTForImageClassification(ViTConfig(image_size=8, patch_size=2, num_channels=1, num_labels=10)).save_pretrained(sys.argv[1])
PYEOF
AUDIT_ARGS=(-m hf_fairquant.cli audit --model "$SHARD/fp_model" --dataset digits --long-tail-classes 3,8
            --long-tail-fraction 0.1 --recipes w8a8,w4 --n-boot 1000 --batch-size 32)
ACC="$(dirname "$PY")/accelerate"; [[ -x "$ACC" ]] || ACC=accelerate
if [[ "$NGPU" -ge 2 ]]; then RANKS=$NGPU; HIDE=(); else RANKS=2; HIDE=(CUDA_VISIBLE_DEVICES=); fi
{
  echo "GPUs: $NGPU; sharded over $RANKS ranks ($([[ ${#HIDE[@]} -gt 0 ]] && echo 'CPU, gloo' || echo 'GPU, NCCL'))"
  start=$(date +%s)
  env "${HIDE[@]}" "$PY" -m torch.distributed.run --nproc_per_node 1 "${AUDIT_ARGS[@]}" --output-dir "$SHARD/one" >/dev/null
  echo "one process: $(( $(date +%s) - start )) s"
  start=$(date +%s)
  env "${HIDE[@]}" "$ACC" launch --multi_gpu --num_processes "$RANKS" --num_machines 1 --mixed_precision no \
      --dynamo_backend no "${AUDIT_ARGS[@]}" --output-dir "$SHARD/many" >/dev/null
  echo "$RANKS processes: $(( $(date +%s) - start )) s"
  "$PY" - "$SHARD/one/results.json" "$SHARD/many/results.json" <<'PYEOF'
import json, sys
one, many = (json.load(open(p))["audit"] for p in sys.argv[1:])
for report in (one, many):
    report["settings"].pop("timings_s")
print("sharded audit identical to one process:", one == many)
sys.exit(0 if one == many else 1)
PYEOF
} 2>&1 | tee "$OUT/sharded.log" || status=1

# 3. the test suite (CPU tests; a CUDA device must not change any result)
"$PY" -m pytest -q -x tests 2>&1 | tee "$OUT/pytest.log" || status=1

echo "gpu_check: done (status $status); results in $OUT/"
exit $status
