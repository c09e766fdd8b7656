#!/usr/bin/env bash
# The demo model's KPI table (issue #7; adaptive FDS rows: issue #9): judge mIoU of images generated from all
# 101 CamVid val maps, clean and at PSNR 30/20/15/10/5/1 dB (AWGN), for the FDS arms paper / off / adaptive.
#
#   bash benchmarks/evaluate_demo.sh            # every call, one after the other, then the merged table
#   bash benchmarks/evaluate_demo.sh 1 & bash benchmarks/evaluate_demo.sh 2; wait; bash benchmarks/evaluate_demo.sh table
#                                               # two lanes, one per CPU core (about half the wall time)
#
# Each call is an ordinary `gesco evaluate` with its own output folder (resumable: a rerun only makes what is
# missing); benchmarks/collect_kpis.py merges their results.json files. Settings: STEPS, SAMPLER, MODEL, OUT, LIMIT.
set -euo pipefail
cd "$(dirname "$0")/.."

STEPS=${STEPS:-25}
SAMPLER=${SAMPLER:-default}
MODEL=${MODEL:-gesco_diffusers/assets/demo/camvid}
OUT=${OUT:-outputs/eval-demo}
LIMIT=${LIMIT:-}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

evaluate() {  # evaluate NAME ARGS...: one gesco evaluate call into $OUT/NAME
  local name=$1; shift
  python -m gesco_diffusers evaluate --model "$MODEL" --data-dir ../shared/data/camvid --channels awgn \
    --sampler "$SAMPLER" --steps "$STEPS" --batch-size 16 --seed 0 ${LIMIT:+--limit "$LIMIT"} \
    --out "$OUT/$name" "$@" > "$OUT/$name.log" 2>&1
  echo "done: $name ($(date +%T))"
}

lane1() {
  evaluate paper-low --fds paper --psnrs 10 5 1 --no-rate-distortion
  evaluate clean-and-off-10 --fds none --psnrs 10          # the clean map (no FDS) and FDS off at 10 dB
  evaluate adaptive-low --fds adaptive --psnrs 10 5 1 --no-rate-distortion --image-codec none
}

lane2() {
  evaluate paper-high --fds paper --psnrs 30 20 15 --no-rate-distortion
  evaluate off-low --fds none --psnrs 5 1 --no-rate-distortion --image-codec none
  evaluate adaptive-high --fds adaptive --psnrs 30 20 15 --no-rate-distortion --image-codec none
}

table() {
  python benchmarks/collect_kpis.py "$OUT"/*/ --markdown "$OUT/kpis.md" --card-json "$OUT/kpis.json"
}

mkdir -p "$OUT"
case "${1:-all}" in
  1) lane1 ;;
  2) lane2 ;;
  table) table ;;
  all) lane1; lane2; table ;;
  *) echo "usage: $0 [1|2|table|all]" >&2; exit 2 ;;
esac
