"""Names defined once, torch-free: the choices the CLI offers and the artifact file names.

The registries (``train.objectives``, ``align``, ``models.registry``) and the readers
(``inspect``, ``verify``) import these, so ``kdep-cache --help`` and the argument checks of
:mod:`kdep_cache.checks` need no torch import and cannot drift from what the library accepts.
"""

from __future__ import annotations

# train-student --objective (train/objectives.py)
OBJECTIVES = ("kdep", "conv1x1-pre", "conv1x1-post", "conv1x1-margin", "logits",
              "supervised", "online", "kdep-ml")
# fit-svd --aligner / --transform / --null (align.py)
ALIGNERS = ("svd", "cs-var", "cs-rand", "interp", "identity")
TRANSFORMS = ("pts", "sn", "sm", "none")
NULLS = ("keep", "zero")
# extract --augment (augment.py) and --dtype (features and targets)
AUGMENT_KINDS = ("rrc", "center")
STORAGE_DTYPES = ("float16", "float32")
# how a view's pixels are made (augment.py; recorded in the augmentation spec, "render"):
# full decode (every cache written before the key), JPEG DCT-domain draft decode when the
# crop allows it (the default), nvJPEG decode on the GPU (--decode gpu)
RENDER_FULL, RENDER_DRAFT, RENDER_GPU = "full-decode/1", "jpeg-draft/1", "cuda-decode/1"
RENDER_METHODS = (RENDER_FULL, RENDER_DRAFT, RENDER_GPU)
DECODES = ("cpu", "gpu")  # extract / train-student --decode
# extract --pack (views/pack.py): none | original | jpeg:SIDE[:QUALITY]; the default is chosen
# by benchmarks/results/pack.json (README "Packed caches")
DEFAULT_PACK = "auto"  # jpeg:SIDE, SIDE = max(320, image size x 320/224), quality 90
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
# learning-rate schedules (train/loop.py) and transfer modes (transfer/run.py)
SCHEDULES = ("step", "cosine", "constant")
TRANSFER_MODES = ("linear", "finetune")
# transfer --task / --seg-head / --schedule (transfer/run.py, seg.py, schedules.py)
TRANSFER_TASKS = ("classification", "segmentation", "detection")
SEG_HEADS = ("psp", "deeplabv3", "fcn")
TRANSFER_SCHEDULES = (*SCHEDULES, "poly", "multistep")
# ViT teacher features (models/timm_models.py, models/hf_models.py)
TEACHER_FEATURES = ("cls", "mean-patch", "pre-logits")
# torchvision students (models/registry.py)
KNOWN_STUDENTS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
                  "resnext50_32x4d", "wide_resnet50_2", "mobilenet_v2",
                  "mobilenet_v3_small", "mobilenet_v3_large")
# torchvision teachers (models/registry.py checks this list against torchvision's own) and the
# EfficientNet-Lite ones: known without importing torch, so the CLI refuses a typo at once
TV_TEACHERS = ("mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small", "resnet101",
               "resnet152", "resnet18", "resnet34", "resnet50", "resnext101_32x8d",
               "resnext101_64x4d", "resnext50_32x4d", "wide_resnet101_2", "wide_resnet50_2")
LITE_TEACHERS = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")
# students and teachers resolved by an ecosystem loader (models/timm_models.py, hf_models.py)
TIMM_PREFIX, HF_PREFIX = "timm:", "hf:"

# artifact file names (train/student.py, train/loop.py, transfer/run.py, cache/manifest.py)
STUDENT_FILE = "student.pth"
SIDECAR = "student.json"
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
RESULTS = "results.json"
CONFIG = "config.json"
IMAGES = "images.json"
PROJECTION_FILE = "projection.h5"
MANIFEST = "manifest.json"  # written last by extract / fit-svd: the store is complete
DIAGNOSE_REPORT = "diagnose.json"
STUDENT_SAFETENSORS = "student.safetensors"  # the same tensors as STUDENT_FILE, no pickle
