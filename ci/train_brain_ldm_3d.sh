#!/usr/bin/env bash
# The exact commands that produced bundles/brain_ldm_3d/models/{autoencoder,diffusion_model}.safetensors.
# CPU, THREADS torch threads (default 1), on a shared 2-core machine: each stage runs under a wall-clock budget (TimeLimit handler);
# the iterations reached are in the logs and in the weights' metadata ("iteration").
# Logs are appended. Re-running the same command resumes from the newest checkpoint in runs/brain_ldm_3d/<stage>/checkpoints.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
BUNDLE=bundles/brain_ldm_3d
CONFIGS="['$BUNDLE/configs/inference.json','$BUNDLE/configs/train.json']"   # train.json is an overlay
RUNS=${RUNS:-runs/brain_ldm_3d}
AE_MINUTES=${AE_MINUTES:-28}
DM_MINUTES=${DM_MINUTES:-40}
THREADS=${THREADS:-1}
STAGES=${STAGES:-"autoencoder diffusion"}   # e.g. STAGES=diffusion to continue stage 2 only
DM_BATCH=${DM_BATCH:-4}
DM_EPOCHS=${DM_EPOCHS:-1000}
# With no checkpoint under $RUNS (a new machine), start a stage from existing weights instead of from scratch:
# e.g. DM_INIT=$BUNDLE/models/diffusion_model.safetensors continues the shipped weights (fresh optimiser, the
# iteration counter read from the weights). A checkpoint under $RUNS always wins.
AE_INIT=${AE_INIT:-}
DM_INIT=${DM_INIT:-}
mkdir -p "$RUNS"

# 1. the built-in 2 mm brain population (240 subjects; the datalist splits it into training/validation/test)
if [ ! -f data/brain_3d/datalist.json ]; then
  $PY -m common.data make brain --dims 3 --n 240 --out data/brain_3d --seed 0 --no-progress
fi

# 2. stage 1: AutoencoderKL (L1 + KL + patch adversarial after a warm-up; perceptual term only if its
#    pretrained network is in the local torch hub cache, else disabled with a log line)
if [[ " $STAGES " == *" autoencoder "* ]]; then
$PY -m monai.bundle run train_autoencoder --config_file "$CONFIGS" --bundle_root $BUNDLE --export_to_bundle true \
  --output_dir "$RUNS" --num_threads "$THREADS" \
  --autoencoder_train#batch_size 1 --autoencoder_train#lr_g 0.0005 \
  --autoencoder_train#adversarial_weight 0.005 --autoencoder_train#adversarial_warmup_iterations 300 \
  --autoencoder_train#max_epochs 100 --autoencoder_train#time_limit_minutes "$AE_MINUTES" \
  ${AE_INIT:+--autoencoder_train#init_weights "$AE_INIT"} \
  2>&1 | tee -a "$RUNS/autoencoder.log"
fi

# 3. stage 2: diffusion UNet on latents of the frozen autoencoder (scale factor over all training latents,
#    stored in models/diffusion_model.safetensors metadata)
if [[ " $STAGES " == *" diffusion "* ]]; then
$PY -m monai.bundle run train_diffusion --config_file "$CONFIGS" --bundle_root $BUNDLE --export_to_bundle true \
  --output_dir "$RUNS" --num_threads "$THREADS" \
  --diffusion_train#batch_size "$DM_BATCH" --diffusion_train#lr 0.0002 \
  --diffusion_train#max_epochs "$DM_EPOCHS" --diffusion_train#time_limit_minutes "$DM_MINUTES" \
  ${DM_INIT:+--diffusion_train#init_weights "$DM_INIT"} \
  2>&1 | tee -a "$RUNS/diffusion.log"
fi
