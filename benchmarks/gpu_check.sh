#!/usr/bin/env bash
# The GPU check, in one go (under 8 minutes on one GPU), printing one table per part:
#  1. ResNet-50 train step at batch 256 (224x224): fp32, AMP bf16, AMP fp16, bf16 + channels_last, and that
#     torch.compiled; resdsl's module against torchvision's resnet50 timed the same way (benchmarks/train_step.py);
#  2. images/s of the input pipeline on a synthetic JPEG folder it writes, decoded on the CPU (in the workers)
#     and on the GPU (nvjpeg), against torchvision's ImageFolder + DataLoader (benchmarks/input_pipeline.py);
#  3. `resdsl bench --backend tensorrt` fp16 latency against eager fp16, where torch-tensorrt imports.
# With --fig6, then also (opt-in: hours, not minutes):
#  4. the paper's Figure 6 with its full schedule, benchmarks/fig6.sh --iterations 64000 on the GPU: plain-20/56,
#     ResNet-20/56/110 on Fashion-MNIST (and on CIFAR-10 when CIFAR10_DIR names its files), into runs/fig6_gpu.
#     Five runs of 64k iterations at batch 128, each evaluated 6 times on the full test set: expect several hours
#     (not yet measured); an interrupted part 4 continues where its runs' checkpoints are when run again.
# Run from anywhere: benchmarks/gpu_check.sh [--fig6]   (PYTHON=... picks the interpreter; default: python)
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}

FIG6=false
for argument in "$@"; do
  case $argument in
    --fig6) FIG6=true ;;
    *) echo "error: unknown argument '$argument'" >&2
       echo "usage: benchmarks/gpu_check.sh [--fig6]" >&2
       exit 2 ;;
  esac
done

"$PYTHON" -c "
import sys
try:
    import torch
except ImportError:
    sys.exit(2)
sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null
case $? in
  0) ;;
  2) echo "error: benchmarks/gpu_check.sh needs torch and torchvision: pip install -e '.[dev]'" >&2; exit 1 ;;
  *) echo "error: benchmarks/gpu_check.sh needs an NVIDIA GPU that torch can see, and there is none here" >&2; exit 1 ;;
esac

START=$SECONDS
"$PYTHON" -c "import torch; print(f'{torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}')"

echo
echo "## ResNet-50 train step, batch 256, 224x224 (SGD momentum; median of 10 paired rounds)"
echo
echo "| precision and format | resdsl ms | torchvision ms | resdsl / torchvision | resdsl img/s |"
echo "|---|---:|---:|---:|---:|"
step() {  # LABEL SECONDS [train_step.py flags]: one row of the table, or why there is none
  local label=$1 limit=$2
  shift 2
  local out
  out=$(timeout "$limit" "$PYTHON" benchmarks/train_step.py --models resnet50 --batch 256 --size 224 \
        --measures "train step" --repeats 10 "$@" 2>&1)
  local status=$?
  local row
  row=$(printf '%s\n' "$out" | awk -F'|' -v label="$label" '$5 ~ /train step/ {
        printf "| %s | %.1f | %.1f | %.3f | %.0f |\n", label, $6, $7, $8, 256000 / $6 }')
  if [ -n "$row" ]; then
    echo "$row"
  elif [ "$status" -eq 124 ]; then
    echo "| $label | timed out after ${limit} s | | | |"
  else
    echo "| $label | failed: $(printf '%s\n' "$out" | grep -v '^\s*$' | tail -1 | cut -c1-120) | | | |"
  fi
}
step "fp32" 90 --no-compile
step "AMP bf16" 60 --no-compile --amp bf16
step "AMP fp16 (GradScaler)" 60 --no-compile --amp fp16
step "AMP bf16, channels_last" 60 --no-compile --amp bf16 --channels-last
step "AMP bf16, channels_last, torch.compile" 200 --amp bf16 --channels-last

echo
echo "## Input pipeline: images/s of 224x224 training views, batch 256 (uint8 for resdsl, normalised floats for"
echo "## torchvision; '+ normalize' adds resdsl's mean subtraction and PCA lighting on the GPU)"
echo
CORES=$(nproc)
timeout 150 "$PYTHON" benchmarks/input_pipeline.py --device cuda --images 2048 --batch 256 --batches 6 \
  --warmup 2 --repeats 2 --workers "$((CORES / 2)),$CORES" --decoders auto,nvjpeg 2>&1 \
  || echo "(the input pipeline benchmark failed or timed out after 150 s)"

echo
echo "## TensorRT fp16 vs eager fp16, resnet50 at batch 32 (resdsl bench)"
echo
if "$PYTHON" -c "import torch_tensorrt" 2>/dev/null; then
  timeout 180 "$PYTHON" -m resdsl bench specs/resnet50.res --backend tensorrt --precision fp16 --batch 32 \
    --device cuda --no-compare || echo "(the TensorRT build or run failed or timed out after 180 s)"
  timeout 60 "$PYTHON" -m resdsl bench specs/resnet50.res --backend pytorch --precision fp16 --batch 32 \
    --device cuda --no-compare | tail -n +2 || echo "(eager fp16 failed or timed out after 60 s)"
else
  echo "skipped: torch-tensorrt does not import here (pip install 'resdsl[tensorrt]')"
fi

if $FIG6; then
  echo
  echo "## Figure 6 with the paper's schedule: 64k iterations, lr steps at 32k and 48k (benchmarks/fig6.sh)"
  echo
  FIG6_START=$SECONDS
  PYTHON=$PYTHON benchmarks/fig6.sh --iterations 64000 --out runs/fig6_gpu -- --device cuda \
    || echo "(fig6.sh failed: its runs so far are in runs/fig6_gpu, and running it again continues them)"
  echo "Figure 6 took $((SECONDS - FIG6_START)) s"
fi

echo
echo "gpu_check.sh took $((SECONDS - START)) s"
