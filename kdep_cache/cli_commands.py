"""The subcommands (each: options -> one library call -> summary)."""

from __future__ import annotations

import click

from .cli import _run, emit, main


def _aug_options(f):
    opts = [
        click.option("--crop-scale", nargs=2, type=float, default=(0.08, 1.0), show_default=True,
                     help="RandomResizedCrop area range (paper: 0.08 1)."),
        click.option("--no-jitter", is_flag=True, help="Turn ColorJitter(0.1,0.1,0.1) off."),
        click.option("--no-lighting", is_flag=True, help="Turn PCA lighting (0.05) off."),
        click.option("--no-flip", is_flag=True, help="Turn horizontal flips off."),
        click.option("--center-view", is_flag=True,
                     help="Make view 0 a deterministic centre crop."),
        click.option("--augment", type=click.Choice(["rrc", "center"]), default="rrc",
                     show_default=True, help="rrc = the paper's random views; center = centre crops."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


@main.command()
@click.option("--data", required=True, type=click.Path(), help="Image folder (recursive).")
@click.option("--teacher", required=True,
              help="torchvision name (resnet50, ...), efficientnet-lite0/1/2, or a TorchScript file.")
@click.option("--teacher-weights", default=None,
              help="Local state_dict/checkpoint file, a torchvision weights name, or 'random'.")
@click.option("--out", required=True, type=click.Path(), help="Cache directory to write.")
@click.option("--views", default=4, show_default=True, help="K augmented views per image.")
@click.option("--image-size", default=224, show_default=True, help="Teacher input size S.")
@click.option("--seed", default=0, show_default=True, help="Seed of views and --fraction.")
@click.option("--batch-size", default=64, show_default=True, help="Images per batch (x K views).")
@click.option("--workers", default=2, show_default=True, help="DataLoader decode workers.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--precision", default="auto", show_default=True,
              type=click.Choice(["auto", "fp32", "fp16", "bf16"]),
              help="Teacher precision: auto = fp16 autocast on CUDA, fp32 on CPU.")
@click.option("--fraction", type=float, default=None,
              help="Class-balanced seeded subset, e.g. 0.1 (paper: 10%).")
@click.option("--file-list", type=click.Path(), default=None,
              help="Only these paths (relative to --data), one per line.")
@click.option("--dtype", type=click.Choice(["float16", "float32"]), default="float16",
              show_default=True, help="Storage dtype of the cached features.")
@click.option("--save-logits", is_flag=True, help="Also cache teacher logits (logits-KD).")
@click.option("--norm", default=None, help="Input normalization preset (imagenet, lite).")
@click.option("--shard-size", default=1024, show_default=True, help="Images per shard.")
@click.option("--rank", default=0, show_default=True, help="This process's rank (multi-process).")
@click.option("--world-size", default=1, show_default=True, help="Number of extracting processes.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@_aug_options
@_run
def extract(as_json, crop_scale, no_jitter, no_lighting, no_flip, center_view, augment, **kw):
    """Run the teacher ONCE over K replayable views per image and cache its features."""
    from .augment import AugmentSpec
    from .extract import ExtractConfig, extract as run
    spec = AugmentSpec(kind=augment, scale=tuple(crop_scale), flip=not no_flip,
                       jitter=0.0 if no_jitter else 0.1, lighting=0.0 if no_lighting else 0.05,
                       center_view0=center_view)
    emit(run(ExtractConfig(augment=spec, **kw)), as_json)
