#!/usr/bin/env bash
# The exact commands that produced the shipped weights of the class-conditioned 2D LDM bundles:
#   BUNDLE=oct_ldm   bash ci/train_class_ldm.sh     -> bundles/oct_ldm/models/*.safetensors
#   BUNDLE=mammo_ldm bash ci/train_class_ldm.sh     -> bundles/mammo_ldm/models/*.safetensors
# CPU, THREADS torch threads; each phase stops at a wall-clock budget (TimeLimit handler) and exports its weights
# into the bundle (--export_to_bundle true). Logs are appended to $RUNS/<stage>.log; rerunning resumes from the
# newest checkpoint under $RUNS/<stage>/checkpoints.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
BUNDLE=${BUNDLE:?set BUNDLE=oct_ldm or BUNDLE=mammo_ldm}
case "$BUNDLE" in
  oct_ldm) POP=oct ;;
  mammo_ldm) POP=mammo ;;
  *) echo "error: BUNDLE must be oct_ldm or mammo_ldm, got $BUNDLE" >&2; exit 2 ;;
esac
N=${N:-2000}
DATA=${DATA:-data/$POP}
RUNS=${RUNS:-runs/$BUNDLE}
THREADS=${THREADS:-1}
AE_CROP_MIN=${AE_CROP_MIN:-10}
AE_MIN=${AE_MIN:-12}
DM_MIN=${DM_MIN:-45}
STAGES=${STAGES:-"autoencoder diffusion"}
ROOT=bundles/$BUNDLE
CONFIGS="['$ROOT/configs/inference.json','$ROOT/configs/train.json']"   # train.json is an overlay
COMMON=(--config_file "$CONFIGS" --bundle_root "$ROOT" --export_to_bundle true --datalist "$DATA/datalist.json"
        --output_dir "$RUNS" --num_threads "$THREADS" --seed 0)
export OMP_NUM_THREADS=$THREADS
mkdir -p "$RUNS"

# 1. the built-in population at the bundle's size (80% training / 10% validation / 10% test)
if [ ! -f "$DATA/datalist.json" ]; then
  mkdir -p "$(dirname "$DATA")"
  $PY -m common.data make "$POP" --n "$N" --out "$DATA" --seed 0 --no-progress
fi

# 2. stage 1: AutoencoderKL, L1 + 1e-6 KL + patch adversarial (0.01 after 300 iterations); perceptual off (no
#    offline network). Phase a: 64x64 random crops (4x cheaper per iteration); phase b resumes on whole images so
#    that the GroupNorm statistics match whole images.
if [[ " $STAGES " == *" autoencoder "* ]]; then
  $PY -m monai.bundle run train_autoencoder "${COMMON[@]}" --autoencoder_train#patch_size "[64,64]" \
    --autoencoder_train#time_limit_minutes "$AE_CROP_MIN" 2>&1 | tee -a "$RUNS/autoencoder.log"
  $PY -m monai.bundle run train_autoencoder "${COMMON[@]}" \
    --autoencoder_train#time_limit_minutes "$AE_MIN" 2>&1 | tee -a "$RUNS/autoencoder.log"
fi

# 3. stage 2: class-conditioned UNet on the frozen autoencoder's latents (posterior samples, scale factor 1/std
#    over all training latents), v-prediction, labels dropped to the null class 10% of the time
if [[ " $STAGES " == *" diffusion "* ]]; then
  $PY -m monai.bundle run train_diffusion "${COMMON[@]}" \
    --diffusion_train#time_limit_minutes "$DM_MIN" 2>&1 | tee -a "$RUNS/diffusion.log"
fi
