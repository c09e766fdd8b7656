#!/usr/bin/env bash
# The demo model's KPI table (issue #7; adaptive FDS rows: issue #9): judge mIoU of images generated from all
# 101 CamVid val maps, clean and at PSNR 30/20/15/10/5/1 dB (AWGN), for the FDS arms paper / off / adaptive.
#
#   bash benchmarks/evaluate_demo.sh                 # every call, one after the other, then the merged table
#   bash benchmarks/evaluate_demo.sh calls & bash benchmarks/evaluate_demo.sh calls; wait
#   bash benchmarks/evaluate_demo.sh table           # two lanes (one per CPU core), then the table
#
# Each call is an ordinary `gesco evaluate` with its own output folder (resumable: a rerun only makes what is
# missing). A lane takes the next call nobody has claimed ($OUT/.claims/NAME holds the PID of the lane running it;
# a claim whose process is gone is taken over; NAME.done marks a finished call). benchmarks/collect_kpis.py merges the results.json files.
# Settings: STEPS, SAMPLER, MODEL, OUT, LIMIT.
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

# NAME ARGS, in order of priority.
CALLS=(
  "paper-high --fds paper --psnrs 30 20 15 --no-rate-distortion"
  "paper-low --fds paper --psnrs 10 5 1 --no-rate-distortion"
  "clean-and-off-10 --fds none --psnrs 10"                  # the clean map (no FDS) and FDS off at 10 dB
  "adaptive-10 --fds adaptive --psnrs 10 --no-rate-distortion --image-codec none"
  "adaptive-5 --fds adaptive --psnrs 5 --no-rate-distortion --image-codec none"
  "adaptive-1 --fds adaptive --psnrs 1 --no-rate-distortion --image-codec none"
  "adaptive-15 --fds adaptive --psnrs 15 --no-rate-distortion --image-codec none"
  "off-low --fds none --psnrs 5 1 --no-rate-distortion --image-codec none"
)
# At 30 and 20 dB the adaptive FDS returns exactly the clean one-hot map for all 101 maps (it is the argmax of a
# clean-enough map; checked with the evaluator's channel seeds), so its images there are the clean-map images.

claim() {  # claim NAME: succeed if this lane may run NAME (not finished, not running in a live lane)
  local file="$OUT/.claims/$1"
  mkdir -p "$OUT/.claims"
  if [ -e "$file.done" ]; then return 1; fi
  if (set -o noclobber; echo $$ > "$file") 2>/dev/null; then return 0; fi
  local owner; owner=$(cat "$file" 2>/dev/null || true)
  if [ -n "$owner" ] && kill -0 "$owner" 2>/dev/null; then return 1; fi
  echo $$ > "$file"                                         # its lane is gone: take it over (the call resumes)
}

calls() {
  for call in "${CALLS[@]}"; do
    # shellcheck disable=SC2086
    if claim "${call%% *}"; then evaluate $call && touch "$OUT/.claims/${call%% *}.done"; fi
  done
}

table() {
  python benchmarks/collect_kpis.py "$OUT"/*/ --markdown "$OUT/kpis.md" --card-json "$OUT/kpis.json"
}

mkdir -p "$OUT"
case "${1:-all}" in
  calls) calls ;;
  table) table ;;
  all) calls; table ;;
  *) echo "usage: $0 [calls|table|all]" >&2; exit 2 ;;
esac
