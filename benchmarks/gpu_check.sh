#!/usr/bin/env bash
# The GPU checks of issues 13 and 22 (its CUDA items), for one lent CUDA machine (written for an H200 with 16 cores),
# in at most ~8 minutes, everything written under $OUT (default ./gpu-out):
#   1. install the project (an existing python with CUDA torch + pip -e, else `make` setup)
#   2. the CUDA tests (pytest -m cuda: device part CUDA vs CPU, prefetching feed, nvJPEG)
#   3. torchrun --nproc-per-node 1 train-student on CUDA (NCCL, cuda:LOCAL_RANK), tiny cache
#   4. extract --decode gpu + train-student on it (nvJPEG path; also from a --pack), tiny;
#      4b. extract --layers + kdep-ml on CUDA (issue 27)
#   5. benchmarks/bench_feed.py --gpu -> $OUT/feed-gpu.json (cached vs compute-only vs online)
#   6. train-student --compile of the benchmark's ResNet-18 (is torch.compile faster here?)
# Each step is time-boxed with `timeout` (its own cap, and never past 470 s from the start);
# a failed step is logged in $OUT/steps.txt and the next one runs.
# NOT run on the project's CPU machine (no GPU there).
#   bash benchmarks/gpu_check.sh            # from the repository root
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
W=$(mktemp -d /tmp/kdep-gpu-XXXX)
T0=$SECONDS
status() { echo "$1 rc=$2 t=$((SECONDS - T0))s" | tee -a "$OUT/steps.txt"; }
cap() { local left=$((470 - (SECONDS - T0))); [ "$left" -lt "$1" ] && echo $((left > 1 ? left : 1)) || echo "$1"; }

# 1. install (<= 180 s with a CUDA torch present, else <= 240 s)
PY=python3
if "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  timeout "$(cap 180)" "$PY" -m pip install -q -e ".[test]" >"$OUT/install.log" 2>&1 \
    || timeout "$(cap 120)" "$PY" -m pip install -q --no-deps -e . >>"$OUT/install.log" 2>&1
else
  timeout "$(cap 240)" make .venv/.kdep-installed >"$OUT/install.log" 2>&1
  PY=.venv/bin/python
fi
status install $?
"$PY" -c "import torch, torchvision; print(torch.__version__, torchvision.__version__,
torch.cuda.get_device_name(0), torch.cuda.is_available())" | tee "$OUT/env.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >>"$OUT/env.txt" 2>&1
nproc >>"$OUT/env.txt"

# 2. CUDA tests (<= 60 s): device part, prefetching feed, nvJPEG (test_feed.py); issue 22:
#    #1 EXIF orientation + #2 a CMYK file in an nvJPEG batch (test_gpu_paths.py
#    test_cuda_decode_applies_exif_and_decodes_cmyk), #20 one pinned parameter tensor per batch
#    (test_cuda_parameters_are_one_pinned_tensor), #3 timm BatchNormAct2d -> SyncBatchNormAct
#    keeps its ReLU on CUDA (test_syncbn.py test_cuda_sync_norm_act_runs_and_keeps_its_activation);
#    issue 26.4: nvJPEG from a pack (EXIF baked in, a PNG source re-encoded) equals PIL
#    (test_pack.py test_cuda_nvjpeg_from_the_pack_matches_pil)
timeout "$(cap 60)" "$PY" -m pytest -q -m cuda tests/test_feed.py tests/test_gpu_paths.py \
  tests/test_syncbn.py tests/test_pack.py -p no:cacheprovider \
  --junitxml="$OUT/cuda-tests.xml" >"$OUT/cuda-tests.log" 2>&1
status cuda-tests $?

# 3. torchrun, one CUDA rank, on a tiny cache of the 12 test photos (<= 90 s; 1x1-conv
#    objective: too few images for a 512-d SVD); issue 22 #20: the loss is read back once per
#    25 steps (train/readback.py) and the run's summary has mean_images_per_s; #5: the run
#    records world_size 1 (student.json settings)
"$PY" -c "import torch, torchvision; torch.save(torchvision.models.resnet18().state_dict(), '$W/r18.pth')"
BIN=$("$PY" -c "import os, sys; print(os.path.dirname(sys.executable))")
KC=$BIN/kdep-cache; [ -x "$KC" ] || KC=$(command -v kdep-cache)
TR=$BIN/torchrun; [ -x "$TR" ] || TR=$(command -v torchrun)
(timeout "$(cap 90)" bash -c "
  $KC extract --data tests/data/cifar --teacher resnet18 --teacher-weights $W/r18.pth \
     --views 2 --image-size 32 --out $W/cache --device cuda --json &&
  $TR --standalone --nproc-per-node 1 --no-python $KC train-student \
     --cache $W/cache --objective conv1x1-pre --student resnet18 --epochs 2 --batch-size 4 \
     --device cuda \
     --out $W/run --json &&
  grep -q '\"world_size\": 1' $W/run/student.json") >"$OUT/torchrun.log" 2>&1
status torchrun $?

# 4. --decode gpu (nvJPEG) extract + replay, tiny (<= 60 s); issue 22 #1/#2: the extract
#    records no skipped image (every test photo decodes through the per-image fallback too)
(timeout "$(cap 60)" bash -c "
  $KC extract --data tests/data/cifar --teacher resnet18 --teacher-weights $W/r18.pth \
     --views 2 --image-size 32 --out $W/cache-gpu --device cuda --decode gpu --json \
     >$W/extract-gpu.json && cat $W/extract-gpu.json &&
  $PY -c \"import json; assert json.load(open('$W/extract-gpu.json'))['skipped'] == 0\" &&
  $KC train-student --cache $W/cache-gpu --objective conv1x1-pre --student resnet18 \
     --epochs 1 --batch-size 4 --device cuda --out $W/run-gpu --json &&
  $KC extract --data tests/data/cifar --teacher resnet18 --teacher-weights $W/r18.pth \
     --views 2 --image-size 32 --out $W/cache-gpu-pack --device cuda --decode gpu \
     --pack jpeg:256 --json && \
  $KC train-student --cache $W/cache-gpu-pack --objective conv1x1-pre --student resnet18 \
     --epochs 1 --batch-size 4 --device cuda --out $W/run-gpu-pack --json") \
  >"$OUT/decode-gpu.log" 2>&1
status decode-gpu $?

# 4b. issue 27 on CUDA (<= 60 s): stage maps cached, per-layer targets, kdep-ml trained through
#     the CUDA prefetch with the multi-target batch record (never run on a GPU before)
(timeout "$(cap 60)" bash -c "
  $KC extract --data tests/data/cifar --teacher resnet18 --teacher-weights $W/r18.pth \
     --views 2 --image-size 64 --layers layer3,layer4 --grid 2 --out $W/cache-ml --device cuda &&
  $KC fit-svd --cache $W/cache-ml --student resnet18 --null zero --fit-views all \
     --out $W/targets-ml &&
  $KC train-student --targets $W/targets-ml --student resnet18 --objective kdep-ml \
     --epochs 1 --batch-size 4 --device cuda --out $W/run-ml --json") >"$OUT/kdep-ml.log" 2>&1
status kdep-ml-cuda $?

# 5. the benchmark (<= 200 s): photos from mate-backgrounds if present (re-encoded at the
#    --photo-side), else synthetic large JPEGs (recorded in the JSON)
PHOTOS=${PHOTOS:-/usr/share/backgrounds/mate}
[ -d "$PHOTOS" ] || timeout "$(cap 30)" apt-get install -y mate-backgrounds >/dev/null 2>&1 || true
timeout "$(cap 200)" "$PY" benchmarks/bench_feed.py --gpu --no-wait --photos "$PHOTOS" --work "$W/bench" \
  --out "$OUT/feed-gpu.json" >"$OUT/bench.log" 2>&1
status bench-gpu $?

# 6. --compile against the benchmark's uncompiled ResNet-18 rate (feed-gpu.json)
timeout "$(cap 100)" "$KC" train-student --targets "$W/bench/targets-512" --student resnet18 \
  --epochs 2 --batch-size 256 --device cuda --compile --out "$W/run-compile" --json \
  >"$OUT/compile.json" 2>"$OUT/compile.log"
status compile $?
cat "$OUT/steps.txt"
