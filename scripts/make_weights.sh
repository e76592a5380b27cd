#!/usr/bin/env bash
# Reproduce the shipped default model (registry.yaml + weights/) with the project's own commands,
# on synth4d only, on a CPU. L4P's recipe, shrunk for 2 cores:
#   stage 1: l4p-train jointly trains the encoder (from scratch) with depth, flow and tracking;
#   stage 2: the encoder is frozen and motion, pose (and normals, when installed) are trained
#            with l4p-train-head, as L4P did for its extension tasks.
# Every run uses bf16 autocast (fast on CPUs with bf16 units; weights stay float32) and writes
# float16 files (save_dtype: the weights are rounded before the final evaluation, so the recorded
# metrics are those of the shipped files, and the whole model stays under 25 MB).
# Work happens in runs/default-model/; registry.yaml and weights/ are replaced only at the end.
# Usage: bash scripts/make_weights.sh [STAGE1_STEPS] [STAGE2_STEPS]
#        RESUME=1 bash scripts/make_weights.sh ...   continues an interrupted stage 1 from its checkpoint
#        SKIP_STAGE1=1 bash scripts/make_weights.sh ...   redoes only stage 2 on the stage-1 result
#        ONLY_MATCHING=1 bash scripts/make_weights.sh ...   redoes only the last two steps (flow and
#                                                            tracking with the shared matching) in $WORK;
#            the tracking step fine-tunes the tracking head $WORK holds, so it matches a full run
#            only if that is still the stage-1 head
#        PRESET=l4p-cpu-128 bash scripts/make_weights.sh ...   another encoder preset (l4p-cpu-128: a
#            128x128 window in 16x16 patches, the same 512 tokens; issue 17)
#        PHOTOS=DIR bash scripts/make_weights.sh ...   train on photo-textured synth4d: DIR from
#            scripts/fetch_photos.py, the training photos of data/photos/split.json, half of the
#            materials photographs, real-camera effects, pans and dollies
#        MOTION_MORE=N bash scripts/make_weights.sh ...   N more motion steps (lr 5e-4) from the first
#            2x STAGE2_STEPS (default 0; the l4p-cpu-128 photo model of issue 17 used 1500: val IoU
#            0.037 after 600 steps, 0.196 after 600 + 1500)
#        POSE_STEPS=N FLOW_STEPS=N bash scripts/make_weights.sh ...   steps of the pose head (default
#            3x STAGE2_STEPS) and of the matching flow head (default 2x STAGE2_STEPS)
#        WORK=DIR INSTALL=0 bash scripts/make_weights.sh ...   work in DIR and leave registry.yaml and
#            weights/ alone (the result is DIR/registry.yaml with DIR/weights/)
#        FINETUNE_PHOTOS=DIR bash scripts/make_weights.sh ...   then fine-tune the depth (2 x 600 steps)
#            and normals (500) heads on the frozen encoder on 240x320 clips letterboxed into the window,
#            half photo-textured (DIR from scripts/fetch_photos.py, training photos only), and fit the
#            motion head's fusion with the shared matching (scripts/fit_motion_fusion.py --write);
#            ONLY_FINETUNE=1 does just that on the model already in $WORK
set -euo pipefail
cd "$(dirname "$0")/.."
STAGE1=${1:-1000}
STAGE2=${2:-300}
BIN=.venv/bin
WORK=${WORK:-runs/default-model}
PRESET=${PRESET:-l4p-cpu-small}
resume=()
if [ "${ONLY_FINETUNE:-0}" = 1 ]; then
  [ -f "$WORK/registry.yaml" ] || { echo "ONLY_FINETUNE=1 needs a model in $WORK" >&2; exit 2; }
  echo "ONLY_FINETUNE=1: fine-tuning the model in $WORK"
elif [ "${ONLY_MATCHING:-0}" = 1 ]; then
  SKIP_STAGE1=1
  echo "ONLY_MATCHING=1: reusing stage 1 and motion/pose/normals in $WORK"
elif [ "${SKIP_STAGE1:-0}" = 1 ]; then
  echo "SKIP_STAGE1=1: reusing the stage-1 result in $WORK"
elif [ "${RESUME:-0}" = 1 ] && [ -f "$WORK/registry.yaml" ]; then
  resume=(--resume)
else
  rm -rf "$WORK" && mkdir -p "$WORK"
  cat > "$WORK/registry.yaml" <<YAML
schema_version: 1
encoder:
  preset: $PRESET
  seed: 0
heads: {}
YAML
fi
common=(batch_size=2 log_every=20 eval_batches=8 checkpoint_every=100 data.options.num_queries=32
  precision=bf16 save_dtype=float16)
if [ -n "${PHOTOS:-}" ]; then
  [ -d "$PHOTOS" ] || { echo "PHOTOS=$PHOTOS is not a folder: make it with python scripts/fetch_photos.py" >&2; exit 2; }
  common+=(data.options.textures="$PHOTOS" data.options.photo_split=data/photos/split.json
    data.options.texture_mix=0.5 data.options.camera_effects=true data.options.camera_motion=mixed)
fi
start=$(date +%s)

if [ "${ONLY_FINETUNE:-0}" != 1 ]; then
[ "${SKIP_STAGE1:-0}" = 1 ] || $BIN/l4p-train --heads depth,flow,tracking --registry "$WORK/registry.yaml" "${resume[@]}" "${common[@]}" \
  train_encoder=true steps="$STAGE1" lr=1e-3 encoder_lr=5e-4 warmup_steps=50 \
  params.depth.preset=cpu params.flow.preset=cpu params.tracking.max_queries=64

installed=$($BIN/l4p heads --json --registry "$WORK/registry.yaml")
stage2_heads="motion pose normals"
[ "${ONLY_MATCHING:-0}" = 1 ] && stage2_heads=""
for head in $stage2_heads; do
  if ! grep -q "\"head\": \"$head\"" <<<"$installed"; then
    echo "skipping $head: its plugin is not installed"; continue
  fi
  extra=(steps="$STAGE2")
  [ "$head" != pose ] && extra+=(params.$head.preset=cpu)  # pose: the small preset solved poses better
  # camera motion is learned slowly (val ATE on the previous encoder: 0.209 after 300 steps, 0.171 after 900)
  [ "$head" = pose ] && extra+=(steps="${POSE_STEPS:-$((3 * STAGE2))}")
  # moving pixels are rare: weight them, and give the head twice the steps
  [ "$head" = motion ] && extra+=(params.motion.pos_weight=4 steps=$((2 * STAGE2)))
  $BIN/l4p-train-head --plugin "$head" --registry "$WORK/registry.yaml" "${common[@]}" \
    lr=1e-3 warmup_steps=30 "${extra[@]}"
done

# Motion, continued: moving pixels are rare and the motion loss falls slowly; the first run's weights
# are trained further at half the learning rate (init_from_registry).
if [ "${MOTION_MORE:-0}" -gt 0 ] && [ "${ONLY_MATCHING:-0}" != 1 ] && grep -q '"head": "motion"' <<<"$installed"; then
  $BIN/l4p-train-head --plugin motion --registry "$WORK/registry.yaml" "${common[@]}" \
    lr=5e-4 warmup_steps=30 params.motion.preset=cpu params.motion.pos_weight=4 init_from_registry=true \
    steps="${MOTION_MORE}"
fi

# Flow: the token-only head of stage 1 does not learn to match pixels on this budget (its EPE stays
# at the zero-flow baseline), so the shipped flow head reads the shared frame matching (OpenCV DIS at
# the input resolution, `matching:` in the registry) and learns a correction at the input resolution
# (matching=shared), trained fresh on the frozen encoder on 240x320 clips letterboxed into the 64x64
# window (the flow is decoded and supervised at 240x320, the size `l4p eval --size` reports).
$BIN/l4p-train-head --plugin flow --registry "$WORK/registry.yaml" "${common[@]}" \
  params.flow.preset=cpu params.flow.matching=shared steps="${FLOW_STEPS:-$((2 * STAGE2))}" lr=1e-3 warmup_steps=30 \
  data.options.height=240 data.options.width=320
# Tracking: positions by chaining the shared matching's flow from each query (matching=shared), occluded
# where the round trip fails; the decoder's visibility and depth are fine-tuned for it on the frozen
# encoder (64x64 clips: the tracking head's training targets are in model-window pixels).
$BIN/l4p-train-head --plugin tracking --registry "$WORK/registry.yaml" "${common[@]}" \
  init_from_registry=true params.tracking.matching=shared steps="$STAGE2" lr=5e-4 warmup_steps=20

fi  # ONLY_FINETUNE

# Real-photograph fine-tune (issue 17): depth and normals on letterboxed 240x320 clips, half of them
# photo-textured (the trainer maps the window's output back to the clip's grid for the loss), and
# the motion head's fusion of its decoder with the rigid-motion residual of the shared matching.
if [ -n "${FINETUNE_PHOTOS:-}" ]; then
  [ -d "$FINETUNE_PHOTOS" ] || { echo "FINETUNE_PHOTOS=$FINETUNE_PHOTOS is not a folder" >&2; exit 2; }
  photo=(data.options.textures="$FINETUNE_PHOTOS" data.options.photo_split=data/photos/split.json
    data.options.texture_mix=0.5 data.options.camera_effects=true data.options.camera_motion=mixed
    data.options.height=240 data.options.width=320 data.options.num_queries=0 init_from_registry=true
    warmup_steps=30)
  # head:steps:lr:seed, in this order (the shipped depth head: 600 steps at 3e-4, then 600 at 1.5e-4)
  for run in depth:600:3e-4:0 normals:500:3e-4:0 depth:600:1.5e-4:1; do
    IFS=: read -r head steps lr seed <<<"$run"
    grep -q "^  $head:" "$WORK/registry.yaml" || { echo "skipping $head: not in $WORK/registry.yaml"; continue; }
    $BIN/l4p-train-head --plugin "$head" --registry "$WORK/registry.yaml" "${common[@]}" "${photo[@]}" \
      params.$head.preset=cpu steps="$steps" lr="$lr" seed="$seed"
  done
  $BIN/python scripts/fit_motion_fusion.py --photos "$FINETUNE_PHOTOS" --registry "$WORK/registry.yaml" --write
fi

# Pose at inference: the window SfM on the shared matching, chained at the decoder's step length
# (README "The default model"); these options change no weight, so they are set after training.
$BIN/python - "$WORK/registry.yaml" <<'PY'
import sys
from l4p_framework.registry import load_registry
reg = load_registry(sys.argv[1])
if "pose" in reg.registry.heads:
    reg.registry.heads["pose"].params.update(matching="shared", chain_scale="same")
    reg.save()
PY

if [ "${INSTALL:-1}" = 1 ]; then
  rm -rf weights && mkdir -p weights
  cp "$WORK"/weights/*.safetensors weights/
  cp "$WORK/registry.yaml" registry.yaml
  $BIN/l4p registry validate --registry registry.yaml
else
  $BIN/l4p registry validate --registry "$WORK/registry.yaml"
fi
echo "default model rebuilt in $(( ($(date +%s) - start) / 60 )) min"
