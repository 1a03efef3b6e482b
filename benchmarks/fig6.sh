#!/usr/bin/env bash
# The paper's Figure 6 (He et al. 2015, section 4.2) at a budget: plain and residual CIFAR nets of 20, 56 and 110
# layers trained with the paper's recipe scaled to N iterations (lr 0.1, divided by 10 at 50% and 75% of N as the
# paper's 32k and 48k of 64k; ResNet-110 warms up at lr 0.01 until the training error is below 80%, from its spec),
# on Fashion-MNIST and, when --cifar (or CIFAR10_DIR) names its files, on CIFAR-10.
#
#   benchmarks/fig6.sh --iterations N [--out DIR] [--nets "plain20 resnet20 ..."] [--data DIR] [--cifar DIR]
#                      [-- resdsl train flags for every run, e.g. --limit-eval 1000 --device cpu]
#
# Each net trains into DIR/<dataset>/<net> (a folder that holds a run already is resumed, so an interrupted
# benchmark continues and a finished one is only tabulated). Writes the table of final training and test errors
# (markdown) to stdout and DIR/fig6.md, and the curves (training dashed, test bold) to DIR/fig6.png
# (DIR/fig6_cifar10.png for CIFAR-10). Progress goes to stderr; each run's own output is appended to DIR/<dataset>/<net>.log.
# Nets: plainL (specs/cifar_plainL.res) and resnetL (specs/cifarL.res), L in 20 32 44 56 110.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python}
USAGE="usage: benchmarks/fig6.sh --iterations N [--out DIR] [--nets \"plain20 resnet20 ...\"] [--data DIR] [--cifar DIR] [-- train flags]"

usage_error() {  # MESSAGE: one sentence and the usage line, exit 2
  echo "error: $1" >&2
  echo "$USAGE" >&2
  exit 2
}

ITERATIONS=""
OUT=runs/fig6
NETS="plain20 resnet20 plain56 resnet56 resnet110"
FASHION=""
CIFAR=${CIFAR10_DIR:-}
while [ $# -gt 0 ]; do
  case $1 in
    --iterations|--out|--nets|--data|--cifar)
      [ $# -ge 2 ] || usage_error "$1 needs a value"
      case $1 in
        --iterations) ITERATIONS=$2 ;;
        --out) OUT=$2 ;;
        --nets) NETS=$2 ;;
        --data) FASHION=$2 ;;
        --cifar) CIFAR=$2 ;;
      esac
      shift 2 ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --) shift; break ;;
    *) usage_error "unknown argument '$1'" ;;
  esac
done
EXTRA=("$@")

[[ $ITERATIONS =~ ^[1-9][0-9]*$ ]] || usage_error "--iterations must be a positive whole number (the budget), got '${ITERATIONS}'"
[ "$ITERATIONS" -ge 4 ] || usage_error "--iterations must be at least 4, so that the schedule's two steps fall inside the run"
[ -n "${NETS// /}" ] || usage_error "--nets names no net"
declare -A SPECS
for net in $NETS; do
  case $net in
    plain[0-9]*) SPECS[$net]=$ROOT/specs/cifar_plain${net#plain}.res ;;
    resnet[0-9]*) SPECS[$net]=$ROOT/specs/cifar${net#resnet}.res ;;
    *) usage_error "unknown net '$net': give plainL or resnetL, L a depth of the CIFAR zoo (20, 32, 44, 56, 110)" ;;
  esac
  [ -f "${SPECS[$net]}" ] || usage_error "there is no spec for '$net' (${SPECS[$net]#"$ROOT"/} is missing)"
done
command -v resdsl >/dev/null \
  || { echo "error: benchmarks/fig6.sh needs resdsl on PATH: activate the venv (. .venv/bin/activate) or pip install -e ." >&2; exit 1; }

# The paper's schedule scaled to the budget: steps at 32k/64k and 48k/64k; six test points and 30 training points
# on each curve. No divergence check: a net that trains badly (plain-110) is what the figure shows, so it runs on.
FIRST_STEP=$((ITERATIONS / 2))
SECOND_STEP=$((ITERATIONS * 3 / 4))
EVAL_EVERY=$(((ITERATIONS + 5) / 6))
LOG_EVERY=$(((ITERATIONS + 29) / 30))

DATASETS=(fashion-mnist)
declare -A DATA=([fashion-mnist]=$FASHION)
if [ -n "$CIFAR" ]; then
  DATASETS+=(cifar10)
  DATA[cifar10]=$CIFAR
else
  echo "CIFAR-10: skipped (give --cifar DIR, or set CIFAR10_DIR, to the folder of its python batches)" >&2
fi

train() {  # DATASET NET: train (or resume) one net; on failure print resdsl's error and exit 1
  local dataset=$1 net=$2 run=$OUT/$1/$2
  local flags=(--dataset "$dataset" --out "$run" --iterations "$ITERATIONS"
               --schedule "steps($FIRST_STEP: 0.1, $SECOND_STEP: 0.1)"
               --eval-every "$EVAL_EVERY" --log-every "$LOG_EVERY" --no-divergence-check)
  [ -n "${DATA[$dataset]}" ] && flags+=(--data "${DATA[$dataset]}")
  [ -f "$run/last.pt" ] && flags+=(--resume)
  mkdir -p "$OUT/$dataset" || { echo "error: cannot create $OUT/$dataset" >&2; exit 1; }
  local start=$SECONDS
  echo "$dataset $net: training $ITERATIONS iterations into $run ..." >&2
  if ! resdsl train "${SPECS[$net]}" "${flags[@]}" "${EXTRA[@]}" >>"$run.log" 2>&1; then
    local reason
    reason=$(grep '^error:' "$run.log" | tail -1)
    echo "${reason:-error: resdsl train $net failed: $(tail -1 "$run.log")} (the whole output: $run.log)" >&2
    exit 1
  fi
  echo "$dataset $net: done in $((SECONDS - start)) s" >&2
}

table() {  # DATASET: the markdown table of the runs in OUT/DATASET
  "$PYTHON" - "$OUT/$1" $NETS <<'EOF'
import json
import sys
from pathlib import Path

folder = Path(sys.argv[1])
print(f"### {folder.name}\n")
print("| net | layers | params | final train error % | final test error % | iterations |")
print("|---|---:|---:|---:|---:|---:|")
for net in sys.argv[2:]:
    run = folder / net
    params = json.loads((run / "config.json").read_text())["params"]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    train = [r for r in records if r.get("kind") == "train"][-1]
    test = [r for r in records if r.get("kind") == "eval"][-1]
    layers = int(net.removeprefix("plain").removeprefix("resnet"))
    print(f"| {net} | {layers} | {params:,} | {100 * train['train_error']:.2f} | {100 * test['test_error']:.2f} "
          f"| {test['iteration']:,} |")
EOF
}

START=$SECONDS
for dataset in "${DATASETS[@]}"; do
  for net in $NETS; do
    train "$dataset" "$net"
  done
done

REPORT=$(
  echo "## Figure 6 at $ITERATIONS iterations (lr steps at $FIRST_STEP and $SECOND_STEP)"
  for dataset in "${DATASETS[@]}"; do
    echo
    table "$dataset" || exit 1
  done
) || { echo "error: cannot read the runs' metrics in $OUT to make the table" >&2; exit 1; }
printf '%s\n' "$REPORT" > "$OUT/fig6.md.tmp" && mv "$OUT/fig6.md.tmp" "$OUT/fig6.md" \
  || { echo "error: cannot write $OUT/fig6.md" >&2; exit 1; }
printf '%s\n' "$REPORT"

for dataset in "${DATASETS[@]}"; do
  figure=$OUT/fig6.png
  [ "$dataset" = cifar10 ] && figure=$OUT/fig6_cifar10.png
  runs=()
  for net in $NETS; do runs+=("$OUT/$dataset/$net"); done
  resdsl plot "${runs[@]}" -o "$figure" --title "Figure 6 on $dataset, $ITERATIONS iterations" >/dev/null 2>"$OUT/plot.log" \
    || { cat "$OUT/plot.log" >&2; exit 1; }
  echo "wrote $figure" >&2
done
echo "fig6.sh took $((SECONDS - START)) s" >&2
