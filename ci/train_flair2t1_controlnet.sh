#!/usr/bin/env bash
# The exact commands that produced bundles/flair2t1_controlnet/models/*.safetensors.
# CPU, 1 torch thread per process, on the 2-core dev machine: the three diffusion stages run one after another in
# one process, the regression baseline beside them in a second process under the ControlNet stage's budget.
# Each stage runs under a wall-clock budget (TimeLimit); the iterations reached are in the logs and in the weights'
# metadata ("iteration"). Re-running resumes from the newest checkpoint in runs/flair2t1_controlnet/<stage>.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
BUNDLE=bundles/flair2t1_controlnet
CONFIGS="['$BUNDLE/configs/inference.json','$BUNDLE/configs/train.json']"   # train.json is an overlay
RUNS=${RUNS:-runs/flair2t1_controlnet}
AE_MINUTES=${AE_MINUTES:-30}
DM_MINUTES=${DM_MINUTES:-40}
CN_MINUTES=${CN_MINUTES:-40}
THREADS=${THREADS:-1}
COMMON="--bundle_root $BUNDLE --export_to_bundle true --output_dir $RUNS --num_threads $THREADS --datalist data/brain_3d/datalist.json"
mkdir -p "$RUNS"

# 1. the built-in 2 mm brain population (240 subjects: 192 training, 24 validation, 24 test), T1 + FLAIR volumes
if [ ! -f data/brain_3d/datalist.json ]; then
  $PY -m common.data make brain --dims 3 --n 240 --out data/brain_3d --seed 0 --no-progress
fi

# 2. the L1 regression baseline (second process, the ControlNet stage's budget)
$PY -m monai.bundle run train_regression --config_file "$CONFIGS" $COMMON \
  --regression_train#max_epochs 1000 --regression_train#time_limit_minutes "$CN_MINUTES" \
  > "$RUNS/regression.log" 2>&1 &
REGRESSION=$!

# 3. stage 1 autoencoder, stage 2 base LDM, stage 3 ControlNet over the frozen base
$PY -m monai.bundle run train_autoencoder --config_file "$CONFIGS" $COMMON \
  --autoencoder_train#lr_g 0.0005 --autoencoder_train#max_epochs 1000 \
  --autoencoder_train#time_limit_minutes "$AE_MINUTES" >> "$RUNS/autoencoder.log" 2>&1
$PY -m monai.bundle run train_diffusion --config_file "$CONFIGS" $COMMON \
  --diffusion_train#lr 0.0003 --diffusion_train#max_epochs 1000 \
  --diffusion_train#time_limit_minutes "$DM_MINUTES" >> "$RUNS/diffusion.log" 2>&1
$PY -m monai.bundle run train_controlnet --config_file "$CONFIGS" $COMMON \
  --controlnet_train#lr 0.0003 --controlnet_train#max_epochs 1000 \
  --controlnet_train#time_limit_minutes "$CN_MINUTES" >> "$RUNS/controlnet.log" 2>&1
wait $REGRESSION
