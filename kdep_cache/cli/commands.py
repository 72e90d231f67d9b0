"""The subcommands (each: options -> one library call -> summary)."""

from __future__ import annotations

import logging

import click

from .. import checks
from ..checks import multilayer
from ..names import (
    ALIGNERS,
    AUGMENT_KINDS,
    DECODES,
    DEFAULT_PACK,
    NULLS,
    OBJECTIVES,
    PRECISIONS,
    RENDER_FULL,
    SCHEDULES,
    STORAGE_DTYPES,
    TEACHER_FEATURES,
    TRANSFORMS,
)
from .base import _run, emit, main

log = logging.getLogger("kdep_cache.cli")


def _given(name: str) -> bool:
    """Whether option ``name`` of the running command was given on the command line."""
    src = click.get_current_context().get_parameter_source(name)
    return src is not None and src.name == "COMMANDLINE"


def _aug_options(f):
    opts = [
        click.option("--crop-scale", nargs=2, type=float, default=(0.08, 1.0), show_default=True,
                     metavar="LO HI",
                     help="RandomResizedCrop area range, two numbers 0 < LO <= HI <= 1 "
                          "(paper: 0.08 1)."),
        click.option("--no-jitter", is_flag=True, help="Turn ColorJitter(0.1,0.1,0.1) off."),
        click.option("--no-lighting", is_flag=True, help="Turn PCA lighting (0.05) off."),
        click.option("--no-flip", is_flag=True, help="Turn horizontal flips off."),
        click.option("--center-view", is_flag=True,
                     help="Make view 0 a deterministic centre crop."),
        click.option("--background", default=checks.DEFAULT_BACKGROUND, show_default=True,
                     metavar="black|white|gray|R,G,B",
                     help="Color under transparent pixels (RGBA, LA, palette, SVG; gray = "
                          "128,128,128); recorded in the cache and used again at replay."),
        click.option("--augment", type=click.Choice(AUGMENT_KINDS), default="rrc",
                     show_default=True, help="rrc = the paper's random views; center = centre crops."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


@main.command()
@click.option("--data", required=True, type=click.Path(), help="Image folder (recursive).")
@click.option("--teacher", required=True,
              help="torchvision name (resnet50, ...), efficientnet-lite0/1/2, a TorchScript file, "
                   "timm:NAME (+ --teacher-weights) or hf:DIR (a local Hugging Face folder).")
@click.option("--teacher-weights", default=None,
              help="Local .safetensors or state_dict/checkpoint file, a torchvision weights name, "
                   "or 'random'.")
@click.option("--out", required=True, type=click.Path(), help="Cache directory to write.")
@click.option("--views", default=4, show_default=True, help="K augmented views per image.")
@click.option("--image-size", type=int, default=None,
              help="Teacher input size S (default: the checkpoint's own for timm:/hf: teachers "
                   "(timm pretrained_cfg, HF preprocessor_config), else 224 as in the paper).")
@click.option("--seed", default=0, show_default=True,
              help="Seed of views and --fraction (0..2**32-1).")
@click.option("--batch-size", default=64, show_default=True, help="Images per batch (x K views).")
@click.option("--workers", default=2, show_default=True, help="DataLoader decode workers.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--precision", default="auto", show_default=True,
              type=click.Choice(PRECISIONS),
              help="Teacher precision: auto = fp16 autocast on CUDA, fp32 on CPU.")
@click.option("--fraction", type=float, default=None,
              help="Class-balanced seeded subset, e.g. 0.1 (paper: 10%).")
@click.option("--file-list", type=click.Path(), default=None,
              help="Only these paths (relative to --data), one per line.")
@click.option("--dtype", type=click.Choice(STORAGE_DTYPES), default="float16",
              show_default=True, help="Storage dtype of the cached features.")
@click.option("--save-logits", is_flag=True, help="Also cache teacher logits (logits-KD).")
@click.option("--save-post", is_flag=True,
              help="Also cache post-activation features (conv1x1-post baseline).")
@click.option("--norm", default=None, help="Input normalization preset (imagenet, lite).")
@click.option("--teacher-feature", type=click.Choice(TEACHER_FEATURES), default=None,
              help="ViT teachers (timm:/hf:): default = what the head sees (CLS token, or "
                   "timm's pre-logits where it pools otherwise); cls, mean-patch or pre-logits.")
@click.option("--shard-size", default=1024, show_default=True, help="Images per shard.")
@click.option("--rank", default=0, show_default=True, help="This process's rank (multi-process).")
@click.option("--world-size", default=1, show_default=True, help="Number of extracting processes.")
@click.option("--decode", type=click.Choice(DECODES), default="cpu", show_default=True,
              help="gpu: decode JPEGs with nvJPEG on CUDA (other pixels than PIL's: recorded, "
                   "and the cache is then replayed so).")
@click.option("--max-file-mb", type=float, default=checks.MAX_FILE_MB, show_default=True,
              help="Image files larger than this (MiB) are skipped unread, with the reason "
                   "recorded (as are FIFOs, devices and other non-regular files).")
@click.option("--pack", default=DEFAULT_PACK, show_default=True,
              help="Store the images in the cache too, so that no later stage reads the folder: "
                   "auto (jpeg:320 up to 224 px, SIDE = size x 320/224 above), original (the "
                   "files' bytes), jpeg:SIDE[:QUALITY] (longer side at most SIDE px, re-encoded "
                   "once at QUALITY, default 90; the views are rendered from it) or none.")
@click.option("--no-draft", is_flag=True,
              help="Decode JPEGs at full size, never by DCT draft (the method of caches made "
                   "before the draft: resumes them).")
@click.option("--layers", default=None, metavar="L1,L2,...",
              help="Also cache these teacher stages' pre-activation maps, pooled to --grid "
                   "(ResNet layer1..layer4; MobileNet features.N; Lite _blocks.N, _conv_head; "
                   "timm CNN stage names; ViTs tokens): G*G*C*2 bytes per view and layer.")
@click.option("--grid", default=multilayer.DEFAULT_GRID, show_default=True,
              help="--layers: each map is average-pooled to GRID x GRID cells.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@_aug_options
@_run
def extract(as_json, crop_scale, no_jitter, no_lighting, no_flip, center_view, augment,
            background, no_draft, **kw):
    """Run the teacher ONCE over K replayable views per image and cache its features."""
    checks.extract_args({**kw, "crop_scale": crop_scale, "background": background})
    kw["layers"] = multilayer.layer_list(kw["layers"])
    if augment == "center" and _given("crop_scale"):
        log.warning("--crop-scale does not apply to --augment center (centre crops of the "
                    "whole image): ignored")
    from ..extract.run import ExtractConfig
    from ..extract.run import extract as run
    from ..views.augment import AugmentSpec
    spec = AugmentSpec(kind=augment, scale=tuple(crop_scale), flip=not no_flip,
                       jitter=0.0 if no_jitter else 0.1, lighting=0.0 if no_lighting else 0.05,
                       center_view0=center_view, background=checks.background(background),
                       **({"render": RENDER_FULL} if no_draft else {}))
    emit(run(ExtractConfig(augment=spec, **kw)), as_json)


@main.command("fit-svd")
@click.option("--cache", required=True, type=click.Path(), help="Raw cache from `extract`.")
@click.option("--out", required=True, type=click.Path(), help="Targets directory to write.")
@click.option("--dim", type=int, default=None, help="Student feature width D.")
@click.option("--student", default=None,
              help="Read D from a student: torchvision name (resnet18 -> 512) or timm:NAME.")
@click.option("--aligner", type=click.Choice(ALIGNERS),
              default="svd", show_default=True, help="Teacher->student width map (paper Sec 3.2).")
@click.option("--transform", type=click.Choice(TRANSFORMS), default="pts",
              show_default=True, help="Statistics correction (paper Sec 3.3).")
@click.option("--pts-t", default=0.1, show_default=True, help="PTS temperature T.")
@click.option("--pts-n", default=3.0, show_default=True, help="PTS power n.")
@click.option("--fit-views", default="0", show_default=True,
              help="Views the projection is fitted on: 0 (one random view per image), 0,1, all.")
@click.option("--dtype", type=click.Choice(STORAGE_DTYPES), default="float16",
              show_default=True, help="Storage dtype of the targets.")
@click.option("--seed", default=0, show_default=True, help="Seed of cs-rand.")
@click.option("--null", type=click.Choice(NULLS), default="keep", show_default=True,
              help="svd: target of directions with no teacher variance (rank < D): keep = the "
                   "paper's definition (rounding noise, amplified by the transform), zero = 0.")
@click.option("--match", default=None, metavar="LAYER:STAGE,...",
              help="Cached teacher layer -> --student stage of its layer targets (default: "
                   "nearest relative depth); only these layers are fitted.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@_run
def fit_svd(as_json, **kw):
    """Fit the SVD/PCA projection on a raw cache and write aligned, transformed targets."""
    checks.fit_args(kw)
    from ..fit.checks import precheck
    precheck(kw)  # not a raw cache, too few rows: refused before torch is imported
    from ..fit.run import FitConfig
    from ..fit.run import fit_svd as run
    emit(run(FitConfig(**kw)), as_json)


@main.command("train-student")
@click.option("--student", required=True,
              help="torchvision student (resnet18/34/50, mobilenet_v2, ...) or timm:NAME "
                   "(random init; saved so timm.create_model(NAME) loads it strictly).")
@click.option("--out", required=True, type=click.Path(), help="Run directory to write.")
@click.option("--targets", type=click.Path(), default=None, help="fit-svd output (kdep, online).")
@click.option("--cache", type=click.Path(), default=None,
              help="Raw cache (conv1x1-*, logits; or to override the cache path of --targets).")
@click.option("--data", type=click.Path(), default=None,
              help="Image folder: where the cached images are now, or for --objective supervised.")
@click.option("--objective", type=click.Choice(OBJECTIVES), default="kdep",
              show_default=True, help="What the student learns from.")
@click.option("--epochs", default=90, show_default=True,
              help="Pre-training epochs; epoch e sees view e mod K (paper: 90).")
@click.option("--batch-size", default=256, show_default=True,
              help="Images per SGD step (the default --lr scales with it).")
@click.option("--lr", type=float, default=None,
              help="Default: 0.3 (ResNet) / 0.1 (MobileNet) x batch/512 (paper).")
@click.option("--weight-decay", default=5e-4, show_default=True)
@click.option("--momentum", default=0.9, show_default=True)
@click.option("--schedule", type=click.Choice(SCHEDULES), default="step",
              show_default=True, help="step: x0.1 every --lr-step epochs (default: each third).")
@click.option("--lr-step", type=float, default=None, help="Epochs between x0.1 steps.")
@click.option("--loss-weight", default=3.0, show_default=True, help="Multiplier of the loss.")
@click.option("--temperature", default=4.0, show_default=True, help="Logits-KD temperature.")
@click.option("--image-size", type=int, default=None, help="Student input size (default: cache's).")
@click.option("--workers", type=int, default=None,
              help="DataLoader workers that decode and re-render the stored views (default: "
                   "2 on CPU; on CUDA the cores / local GPUs - 1, at most 16).")
@click.option("--seed", default=0, show_default=True,
              help="Seed of the student's init and the epoch order (0..2**32-1).")
@click.option("--device", default="auto", show_default=True,
              help="auto (CUDA if available), cpu or cuda.")
@click.option("--precision", default="auto", show_default=True,
              type=click.Choice(PRECISIONS),
              help="Student autocast: auto = bf16 where the hardware supports it.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run in --out.")
@click.option("--teacher-weights", default=None, help="online only: teacher weights file.")
@click.option("--max-views", type=int, default=None,
              help="Use only views 0..k-1 of the cache (epoch e sees view e mod k).")
@click.option("--keep-checkpoint", is_flag=True,
              help="Keep checkpoint.pt (weights + optimizer state) after the run finishes; by "
                   "default it is removed once student.pth is saved (it only serves --resume).")
@click.option("--sync-bn", is_flag=True,
              help="Under torchrun: BatchNorm statistics over the global batch of all ranks.")
@click.option("--decode", type=click.Choice(DECODES), default=None,
              help="Default: as the cache's views were rendered (gpu only for --decode gpu "
                   "caches).")
@click.option("--compile", is_flag=True,
              help="torch.compile the student (opt-in: not measured faster on a GPU yet).")
@click.option("--match", default=None, metavar="LAYER:STAGE,...",
              help="kdep-ml: teacher layer -> student stage (default: what fit-svd recorded); "
                   "may pick a subset of the targets' layers.")
@click.option("--layer-weights", default=None, metavar="W | LAYER:W,...",
              help="kdep-ml: weight of each layer's map term (default 1; 0 drops a layer).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@_run
def train_student(as_json, **kw):
    """Pre-train a student against cached targets (teacher never loaded, except --objective online)."""
    checks.train_args(kw)
    from ..train.student import TrainConfig
    from ..train.student import train_student as run
    emit(run(TrainConfig(**kw)), as_json)
