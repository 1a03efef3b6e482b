#!/usr/bin/env bash
# The five-minute tour, on the CPU, with no data download: install, then check, count,
# draw, lower to PyTorch and export a network of the paper.
set -euo pipefail
cd "$(dirname "$0")"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
if ! command -v dot >/dev/null; then
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq graphviz >/dev/null
fi
[ -d .venv ] || python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q torch==2.14.1
python -m pip install -q -e '.[torch,onnx]'

mkdir -p demo-out
set -x
resdsl check specs/*.res specs/torchvision/*.res specs/preact/*.res
resdsl info specs/resnet152.res
resdsl info specs/cifar110.res
resdsl viz specs/resnet34.res -o demo-out/resnet34.svg
resdsl build specs/cifar20.res --backend onnx -o demo-out/cifar20.onnx
resdsl bench specs/cifar20.res --backend onnx --batch 32 --runs 20 --no-compare
set +x

cat <<'NEXT'

Next steps: in a new shell, first activate the environment, then try
  . .venv/bin/activate
  resdsl zoo                                            # every shipped spec
  resdsl viz specs/plain34.res -o plain34.svg           # the paper's Figure 3, plain
  resdsl train specs/cifar20.res --dataset fashion-mnist --iterations 300 --out runs/f20
NEXT
