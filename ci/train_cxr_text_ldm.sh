#!/usr/bin/env bash
# The exact commands that produced bundles/cxr_text_ldm/models/{autoencoder,diffusion_model}.safetensors:
# the built-in chest X-ray population at 128x128, then the two stages of configs/train.json on one CPU thread,
# each stopped by its wall-clock budget (TimeLimit handler; the weights are exported when it fires).
# Usage: ci/train_cxr_text_ldm.sh [autoencoder|diffusion|all]   (DATA, RUNS, AE_CROP_MIN, AE_MIN, AE_POLISH_MIN, DIFF_MIN overridable)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA=${DATA:-/work/data/cxr128}
RUNS=${RUNS:-/work/data/cxr_text_ldm_runs}
AE_CROP_MIN=${AE_CROP_MIN:-10}
AE_MIN=${AE_MIN:-14}
AE_POLISH_MIN=${AE_POLISH_MIN:-6}
DIFF_MIN=${DIFF_MIN:-52}
STAGE=${1:-all}
BUNDLE=bundles/cxr_text_ldm
CONFIGS="['$BUNDLE/configs/inference.json','$BUNDLE/configs/train.json']"   # train.json is an overlay
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

if [ ! -f "$DATA/datalist.json" ]; then
  "$PY" -m common.data make cxr --n 3000 --out "$DATA" --size 128 --seed 0
fi

if [ "$STAGE" = autoencoder ] || [ "$STAGE" = all ]; then
  STEP=autoencoder
  # phase 1 (CPU speed-up): 64x64 random crops, 4x cheaper per iteration. For the shipped weights this phase was
  # stopped by hand after 10 min and phase 2 resumed from its iteration-400 checkpoint; AE_CROP_MIN=10 stands for that
  "$PY" -m monai.bundle run "train_$STEP" --config_file "$CONFIGS" --bundle_root "$BUNDLE" --export_to_bundle true \
    --datalist "$DATA/datalist.json" --output_dir "$RUNS" --num_threads 1 --seed 0 \
    --autoencoder_train#patch_size "[64,64]" --autoencoder_train#time_limit_minutes "$AE_CROP_MIN"
  # phase 2: resumes from phase 1's latest checkpoint on full 128x128 images (train.json's default), so that
  # the GroupNorm statistics match whole radiographs (crop-only training left full images ~0.15 L1 off)
  "$PY" -m monai.bundle run "train_$STEP" --config_file "$CONFIGS" --bundle_root "$BUNDLE" --export_to_bundle true \
    --datalist "$DATA/datalist.json" --output_dir "$RUNS" --num_threads 1 --seed 0 \
    --autoencoder_train#time_limit_minutes "$AE_MIN"
  # phase 3: resumes without the adversarial loss (L1 + KL only). Why: under the patch-adversarial loss the decoder's
  # bottom rows oscillate from one iteration to the next (mean test error at y = H-3: +0.138 at the last iteration,
  # -0.05..-0.09 at checkpoints 100 iterations apart), so the exported weights drew a bright line 3 pixels above the
  # bottom edge (issue 21); 6 minutes of L1 settle the borders (|mean error| <= 0.03 on every border row / column)
  "$PY" -m monai.bundle run "train_$STEP" --config_file "$CONFIGS" --bundle_root "$BUNDLE" --export_to_bundle true \
    --datalist "$DATA/datalist.json" --output_dir "$RUNS" --num_threads 1 --seed 0 \
    --autoencoder_train#time_limit_minutes "$AE_POLISH_MIN" --autoencoder_train#adversarial_weight 0.0 \
    --autoencoder_train#checkpoint_interval 20 --autoencoder_train#export_interval 20
fi
if [ "$STAGE" = diffusion ] || [ "$STAGE" = all ]; then
  STEP=diffusion
  "$PY" -m monai.bundle run "train_$STEP" --config_file "$CONFIGS" --bundle_root "$BUNDLE" --export_to_bundle true \
    --datalist "$DATA/datalist.json" --output_dir "$RUNS" --num_threads 1 --seed 0 \
    --diffusion_train#time_limit_minutes "$DIFF_MIN"
fi
