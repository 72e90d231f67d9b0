#!/usr/bin/env bash
# The paper's main recipe (KDEP, CVPR 2022, Table 1 "10% data, 90 epochs"), as one script.
# NOT RUN HERE: it needs ImageNet-1k in ImageFolder form, a ResNet-50 weights file and a GPU.
#   IMAGENET=/data/imagenet/train TEACHER_WEIGHTS=r50.pth DOWNSTREAM="/data/dtd /data/cub" \
#     bash pipelines/imagenet-10pct.sh
# Teacher: torchvision ResNet-50 from a local state_dict (the paper's best teacher, MS-R50
# from the `microsoftvision` package, ships without a classifier: that works too, but then
# drop --save-logits). Students: ResNet-18 (512-d) and MobileNetV2 (1280-d).
set -euo pipefail
# shellcheck source=pipelines/resume.sh
. "$(dirname "$0")/resume.sh"  # a rerun continues: resume DIR gives --resume where DIR was interrupted
: "${IMAGENET:?set IMAGENET to the ImageNet train folder}"
: "${TEACHER_WEIGHTS:?set TEACHER_WEIGHTS to a ResNet-50 state_dict file}"
OUT=${OUT:-runs/imagenet-10pct}
VIEWS=${VIEWS:-8}
EPOCHS=${EPOCHS:-90}
BATCH=${BATCH:-512}
LOSS_WEIGHT=${LOSS_WEIGHT:-3.0}   # paper: 3.0 with MS-R50, 20.0 with the supervised R50
DOWNSTREAM=${DOWNSTREAM:-}
mkdir -p "$OUT"

# 1. 10% class-balanced subset (128 images/class), K views, once.
kdep-cache extract --data "$IMAGENET" --fraction 0.1 --seed 0 --teacher resnet50 \
  --teacher-weights "$TEACHER_WEIGHTS" --views "$VIEWS" --image-size 224 --batch-size 64 \
  --workers 8 --save-logits --out "$OUT/cache"
kdep-cache verify "$OUT/cache"

# 2. One projection per student width (fitted on view 0 = one random view per image).
kdep-cache fit-svd --cache "$OUT/cache" --student resnet18 --out "$OUT/targets-512"
kdep-cache fit-svd --cache "$OUT/cache" --student mobilenet_v2 --out "$OUT/targets-1280"

# 3. Students, paper recipe (step x0.1 at epochs 30 and 60; lr scaled from batch 512).
kdep-cache train-student --targets "$OUT/targets-512" --student resnet18 --epochs "$EPOCHS" \
  --batch-size "$BATCH" --loss-weight "$LOSS_WEIGHT" --workers 8 --out "$OUT/r18-kdep" $(resume "$OUT/r18-kdep")
kdep-cache train-student --targets "$OUT/targets-1280" --student mobilenet_v2 --epochs "$EPOCHS" \
  --batch-size "$BATCH" --loss-weight "$LOSS_WEIGHT" --workers 8 --out "$OUT/mnv2-kdep" $(resume "$OUT/mnv2-kdep")
# The supervised (SP) baseline on the same images and views:
kdep-cache train-student --cache "$OUT/cache" --objective supervised --student resnet18 \
  --epochs "$EPOCHS" --batch-size "$BATCH" --workers 8 --out "$OUT/r18-sp" $(resume "$OUT/r18-sp")

# 4. Transfer: paper protocol (full fine-tune, SGD lr 0.001, batch 64, 150 epochs, step at 50).
for ds in $DOWNSTREAM; do
  name=$(basename "$ds")
  for run in r18-kdep mnv2-kdep r18-sp; do
    kdep-cache transfer --student "$OUT/$run" --data "$ds" --mode finetune --epochs 150 \
      --lr-step 50 --image-size 224 --seeds 0,1,2 --workers 8 --out "$OUT/transfer/$run-$name" \
      $(resume "$OUT/transfer/$run-$name")
  done
  kdep-cache transfer --student random:resnet18 --data "$ds" --mode finetune --epochs 150 \
    --lr-step 50 --image-size 224 --seeds 0,1,2 --workers 8 --out "$OUT/transfer/rand-r18-$name" \
    $(resume "$OUT/transfer/rand-r18-$name")
done
if [ -n "$DOWNSTREAM" ]; then
  kdep-cache compare "$OUT"/transfer/* --metric best --markdown "$OUT/table.md"
fi
