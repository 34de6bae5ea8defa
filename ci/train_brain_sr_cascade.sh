#!/usr/bin/env bash
# The exact commands that produced bundles/brain_sr_cascade/models/*.safetensors.
# CPU, 2 torch threads, one process, on the 2-core dev machine. Each stage runs under a wall-clock budget (TimeLimit);
# the iterations reached are in the logs and in the weights' metadata ("iteration"). Re-running resumes from the
# newest checkpoint in runs/brain_sr_cascade/<stage>.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
BUNDLE=bundles/brain_sr_cascade
CONFIGS="['$BUNDLE/configs/inference.json','$BUNDLE/configs/train.json']"   # train.json is an overlay
RUNS=${RUNS:-runs/brain_sr_cascade}
DATA=${DATA:-data/brain_3d_1mm}
AE_MINUTES=${AE_MINUTES:-35}
DM_MINUTES=${DM_MINUTES:-35}
THREADS=${THREADS:-2}
COMMON="--bundle_root $BUNDLE --export_to_bundle true --output_dir $RUNS --num_threads $THREADS --datalist $DATA/datalist.json"
mkdir -p "$RUNS"

# 1. the built-in 1 mm brain population (120 subjects: 96 training, 12 validation, 12 test), each 1 mm T1
#    (160x224x160) with its 2 mm copy (80x112x80, 2x2x2 block means)
if [ ! -f "$DATA/datalist.json" ]; then
  $PY -m common.data make brain --dims 3 --spacing 1 --n 120 --out "$DATA" --seed 0 --no-progress
fi

# 2. stage 1: the upscaler's autoencoder on 32^3 patches of the 1 mm T1; stage 2: the UNet on latent crops
$PY -m monai.bundle run train_autoencoder --config_file "$CONFIGS" $COMMON \
  --autoencoder_train#time_limit_minutes "$AE_MINUTES" >> "$RUNS/autoencoder.log" 2>&1
$PY -m monai.bundle run train_diffusion --config_file "$CONFIGS" $COMMON \
  --diffusion_train#time_limit_minutes "$DM_MINUTES" >> "$RUNS/diffusion.log" 2>&1
