#!/usr/bin/env bash
# leuko quickstart: install, run the synthetic demo, then the real-dataset workflow.
#
#   bash examples/quickstart.sh                 # demo only (no data needed)
#   DATASET=~/data/dataset2-master/images/TRAIN bash examples/quickstart.sh
#   TRAIN_ARGS="--backbone compact --weights pbc" CV=1 DATASET=... bash examples/quickstart.sh
#
# Run it from the repository root. Every command has --help; errors are one line and
# exit with code 2, so `set -e` stops at the first mistake.
set -euo pipefail

# 1. Install (TensorFlow comes with it). Add '.[dev]' for pytest, ruff and mypy.
python -m pip install -e .

# 2. The whole chain on synthetic smears in ./leuko-demo (about a minute on two idle
#    CPU cores): synth -> dedupe -> split -> train -> evaluate -> predict -> report.
leuko demo leuko-demo

# 3. The same chain on real data: the Kaggle "Blood Cell Images" TRAIN folder, or any
#    DIR/<CLASS>/*.jpg tree (see examples/REAL_DATA.md). Skipped when it is absent.
DATASET="${DATASET:-./dataset}"
read -r -a TRAIN_ARGS <<< "${TRAIN_ARGS:-}"   # e.g. TRAIN_ARGS="--backbone compact --weights pbc"
if [[ ! -d "$DATASET" ]]; then
  echo "no dataset at $DATASET; set DATASET=/path/to/TRAIN to run the real workflow"
  exit 0
fi

# Dry run: exact and near copies, label conflicts, cross-class name collisions.
# Nothing is moved; add --apply to quarantine (with an undo manifest).
leuko dedupe "$DATASET" --report dedupe.json

# Split by source cell: augmented siblings of one photo stay on one side.
# --exclude drops what dedupe would quarantine. Writes splits/train.csv, splits/val.csv
# (--force replaces the split an earlier run of this script wrote).
leuko split "$DATASET" --exclude dedupe.json --force

# Train InceptionResNetV2 at the paper's 240x320, batch 20 (reads splits/, writes
# runs/<name>/ and runs/latest). ImageNet weights come from the Keras cache
# (~/.keras/models/). Offline or on a CPU-only box, use leuko's CPU-sized network with
# its own pretrained weights, shipped in the package (about 17 minutes on two cores):
#   leuko train --img 240x320 --batch 20 --backbone compact --weights pbc
leuko train --img 240x320 --batch 20 ${TRAIN_ARGS[@]+"${TRAIN_ARGS[@]}"}

# Accuracy with a confidence interval, per-class report, confusion matrix, calibration
# (defaults to splits/test.csv, else splits/val.csv, and runs/latest).
leuko evaluate

# Classify one image (or folders and globs; --format csv|json for scripts).
CELL="${CELL:-$(find "$DATASET" -type f -iname '*.jp*g' | sort | head -n 1)}"
leuko predict "$CELL"

# One HTML page about the run: curves, confusion, calibration, worst mistakes with Grad-CAM.
leuko report

# The figure to trust on a small dataset: grouped 5-fold cross-validation (five trainings),
# then the images and whole photos whose labels the held-out models contradict.
if [[ -n "${CV:-}" ]]; then
  leuko cv "$DATASET" --exclude dedupe.json --out runs/cv ${TRAIN_ARGS[@]+"${TRAIN_ARGS[@]}"}
  leuko audit "$DATASET" --model runs/cv
fi

# A deployable artefact; leuko predict runs it without importing TensorFlow.
python -m pip install -e '.[export]'   # tf2onnx and onnx to export, onnxruntime to run it
[[ -e runs/latest/export/model.onnx ]] || leuko export --format onnx
leuko predict "$CELL" --model runs/latest/export/model.onnx
