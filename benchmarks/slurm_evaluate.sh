#!/bin/bash
# gesco evaluate on 2 nodes x 4 GPUs with Slurm (one torchrun per node; adjust the resources to your cluster).
#   sbatch benchmarks/slurm_evaluate.sh path/to/pipeline /data/cityscapes outputs/evaluate-cityscapes
#SBATCH --job-name=gesco-evaluate
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=32
#SBATCH --time=12:00:00
set -euo pipefail
MODEL=${1:?pipeline folder or Hub id}
DATA=${2:?dataset folder}
OUT=${3:-outputs/evaluate}
MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
# Every node runs the same command; the c10d rendezvous on the first node joins the 8 processes into one group.
# The output folder must be on a file system all nodes see (each process writes its own images there).
srun torchrun --nnodes "$SLURM_NNODES" --nproc_per_node 4 --rdzv_id "$SLURM_JOB_ID" --rdzv_backend c10d \
    --rdzv_endpoint "$MASTER_ADDR:29500" -m gesco_diffusers evaluate --model "$MODEL" --data-dir "$DATA" \
    --channels awgn --psnrs 100 30 20 15 10 5 1 --batch-size 8 --out "$OUT"
