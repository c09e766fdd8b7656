#!/usr/bin/env bash
# The paper's comparisons on CamVid (issue #19), one command each, all 101 val maps, AWGN (Eq. 15), the demo model's
# KPI protocol (respaced DDPM, 15 steps, guidance 1.5, seed 0 + map index; see README "The demo model"):
#
#   bash benchmarks/paper_baselines.sh fig10    # GESCO vs DeepJSCC (three bandwidth ratios) at 20/10/5/1 dB
#   bash benchmarks/paper_baselines.sh table8   # FDS on/off x noisy training on/off at 10 dB (--ablation-model)
#   bash benchmarks/paper_baselines.sh table9   # no FDS / paper FDS / adaptive FDS / learned denoiser at 10 dB
#   bash benchmarks/paper_baselines.sh all
#
# All three write into one gesco evaluate folder ($OUT/evaluate), so a run the tables share (Ours with the paper's FDS
# at 10 dB) is generated once; reruns only make what is missing. Settings: DATA, OUT, LIMIT, SAMPLER, STEPS, the
# networks DEEPJSCC (folders or shipped names), DENOISER, ABLATION (the pipeline trained without noisy maps).
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=${DATA:-../shared/data/camvid}
OUT=${OUT:-outputs/paper_baselines}
LIMIT=${LIMIT:-}
SAMPLER=${SAMPLER:-ddpm}
STEPS=${STEPS:-15}
DEEPJSCC=${DEEPJSCC:-deepjscc-r1_48 deepjscc-r1_4 deepjscc-r1_2}
DENOISER=${DENOISER:-map-denoiser}
ABLATION=${ABLATION:-ablation}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

evaluate() {
  python -m gesco_diffusers evaluate --model demo --data-dir "$DATA" --channels awgn --sampler "$SAMPLER" \
    --steps "$STEPS" --batch-size 16 --seed 0 ${LIMIT:+--limit "$LIMIT"} --image-codec none --no-rate-distortion \
    --out "$OUT/evaluate" "$@"
}

fig10() {
  # shellcheck disable=SC2086
  evaluate --fds paper --psnrs 20 10 5 1 --baselines deepjscc --deepjscc-models $DEEPJSCC | tee "$OUT/fig10.md"
}

table8() {
  evaluate --fds paper none --psnrs 10 --ablation-model "$ABLATION" | tee "$OUT/table8.md"
}

table9() {
  python benchmarks/table_ix.py --data-dir "$DATA" --denoiser "$DENOISER" --sampler "$SAMPLER" --steps "$STEPS" \
    --batch-size 16 ${LIMIT:+--limit "$LIMIT"} --out "$OUT"
}

mkdir -p "$OUT"
case "${1:-all}" in
  fig10) fig10 ;;
  table8) table8 ;;
  table9) table9 ;;
  all) fig10; table8; table9 ;;
  *) echo "usage: $0 [fig10|table8|table9|all]" >&2; exit 2 ;;
esac
