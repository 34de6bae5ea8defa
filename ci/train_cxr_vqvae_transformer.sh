#!/usr/bin/env bash
# The exact commands that produced the shipped weights of cxr_vqvae_transformer:
#   bash ci/train_cxr_vqvae_transformer.sh    -> bundles/cxr_vqvae_transformer/models/*.safetensors
# CPU. Stage 1 (VQ-VAE) runs alone with THREADS_AE threads; then the two priors on the frozen VQ-VAE (the
# transformer and the diffusion prior) train side by side, one thread each. Every phase stops at a wall-clock
# budget (TimeLimit handler) and exports its weights into the bundle (--export_to_bundle true). Logs are appended
# to $RUNS/<stage>.log; rerunning resumes from the newest checkpoint under $RUNS/<stage>/checkpoints.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
N=${N:-2000}
DATA=${DATA:-data/cxr}
RUNS=${RUNS:-runs/cxr_vqvae_transformer}
THREADS_AE=${THREADS_AE:-2}
AE_MIN=${AE_MIN:-15}
TR_MIN=${TR_MIN:-40}
DM_MIN=${DM_MIN:-40}
STAGES=${STAGES:-"autoencoder transformer diffusion"}
ROOT=bundles/cxr_vqvae_transformer
CONFIGS="['$ROOT/configs/inference.json','$ROOT/configs/train.json']"   # train.json is an overlay
COMMON=(--config_file "$CONFIGS" --meta_file "$ROOT/configs/metadata.json" --bundle_root "$ROOT" --export_to_bundle true
        --datalist "$DATA/datalist.json" --output_dir "$RUNS" --seed 0)
mkdir -p "$RUNS"

# 1. the built-in chest X-ray population, 128x128 (80% training / 10% validation / 10% test)
if [ ! -f "$DATA/datalist.json" ]; then
  $PY -m common.data make cxr --n "$N" --out "$DATA" --seed 0 --no-progress
fi

# 2. stage 1: VQ-VAE (256 codes of dim 3, 16x16 tokens), L1 + quantisation + patch adversarial (0.01 after 300
#    iterations), perceptual off (no offline network); dead codes restarted every 100 iterations
if [[ " $STAGES " == *" autoencoder "* ]]; then
  OMP_NUM_THREADS=$THREADS_AE $PY -m monai.bundle run train_autoencoder "${COMMON[@]}" --num_threads "$THREADS_AE" \
    --autoencoder_train#time_limit_minutes "$AE_MIN" >> "$RUNS/autoencoder.log" 2>&1
fi

# 3. stage 2a and 2b side by side on the frozen VQ-VAE: the transformer on raster-ordered token sequences,
#    the diffusion prior (v-prediction) on the quantised latents (scale factor 1/std over all training latents)
pids=()
if [[ " $STAGES " == *" transformer "* ]]; then
  OMP_NUM_THREADS=1 $PY -m monai.bundle run train_transformer "${COMMON[@]}" --num_threads 1 \
    --transformer_train#time_limit_minutes "$TR_MIN" >> "$RUNS/transformer.log" 2>&1 &
  pids+=($!)
fi
if [[ " $STAGES " == *" diffusion "* ]]; then
  OMP_NUM_THREADS=1 $PY -m monai.bundle run train_diffusion "${COMMON[@]}" --num_threads 1 \
    --diffusion_train#time_limit_minutes "$DM_MIN" >> "$RUNS/diffusion.log" 2>&1 &
  pids+=($!)
fi
for pid in "${pids[@]}"; do wait "$pid"; done
