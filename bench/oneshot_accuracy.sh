#!/usr/bin/env bash
# One-shot accuracy of the engine on a dataset in the standard layout (images/, labels/, labels.csv):
# train on ATLAS + every other image (unlabelled), segment those images, and score the final
# segmentation and the registration-only result (atlas label warped) against their labels.
#
#   bash bench/oneshot_accuracy.sh DATASET_DIR ATLAS_NAME OUT_DIR [extra 'rrlmedsam train' options]
#
# Writes OUT_DIR/run (run folder), OUT_DIR/segment, OUT_DIR/metrics_{segmentation,registration}/
# and OUT_DIR/timings.txt (wall time and peak memory of training and of segmenting all scans).
set -euo pipefail
dataset=$1; atlas=$2; out=$3; shift 3
mkdir -p "$out"
images=()
for image in "$dataset"/images/*.nii.gz; do
  [ "$(basename "$image" .nii.gz)" = "$atlas" ] || images+=("$image")
done
timed() { /usr/bin/time -f "%e s wall, %M KB peak RSS" -a -o "$out/timings.txt" "$@"; }
echo "train: $*" >> "$out/timings.txt"
timed rrlmedsam train --atlas-image "$dataset/images/$atlas.nii.gz" --atlas-label "$dataset/labels/$atlas.nii.gz" \
  --atlas-labels-table "$dataset/labels.csv" --images "${images[@]}" --out "$out/run" "$@" > "$out/train.log"
echo "segment ${#images[@]} scans:" >> "$out/timings.txt"
timed rrlmedsam segment --model "$out/run" --image "${images[@]}" --out "$out/segment" > "$out/segment.log"
rrlmedsam evaluate --pred "$out/segment" --truth "$dataset" --out "$out/metrics_segmentation" | tail -n 1
rrlmedsam evaluate --pred "$out/segment" --truth "$dataset" --pred-name warped_atlas_label --out "$out/metrics_registration" | tail -n 1
