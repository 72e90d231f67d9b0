"""The ``transfer`` and ``compare`` subcommands (stage 3)."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from .. import checks
from ..errors import InputError
from ..names import PRECISIONS, SEG_HEADS, TRANSFER_MODES, TRANSFER_SCHEDULES, TRANSFER_TASKS
from ..storage.fsio import atomic_write
from .base import _run, emit, main


def _seeds(ctx, param, value: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(s) for s in value.split(",") if s.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None
    if not seeds:
        raise click.BadParameter("at least one seed is needed")
    return seeds


@main.command()
@click.option("--student", required=True,
              help="train-student run dir (or its student.pth), a state_dict file (+ --arch), "
                   "random:NAME, or teacher:CACHE (the teacher of a raw cache, linear probe "
                   "only: the reference row of compare).")
@click.option("--arch", default=None, help="Architecture of a plain state_dict (resnet18, ...).")
@click.option("--label", default=None, help="Name of the student in results and tables.")
@click.option("--data", required=True, type=click.Path(),
              help="Classification: an ImageFolder DIR/train + DIR/test (or val), or one tree to "
                   "split. Segmentation / detection: a PASCAL VOC or COCO folder (detected).")
@click.option("--task", type=click.Choice(TRANSFER_TASKS),
              default="classification", show_default=True,
              help="Downstream task: classification, segmentation (PSP head, mIoU) or detection "
                   "(Faster R-CNN + FPN, COCO AP).")
@click.option("--out", required=True, type=click.Path(), help="Result directory to write.")
@click.option("--mode", type=click.Choice(TRANSFER_MODES), default=None,
              help="Classification: frozen-feature linear probe (default) or full fine-tuning "
                   "(paper). Segmentation / detection always fine-tune.")
@click.option("--epochs", type=int, default=None,
              help="Fine-tuning epochs [default: 150 classification (paper), 50 segmentation "
                   "(PSPNet VOC), 12 detection (COCO 1x)].")
@click.option("--batch-size", type=int, default=None,
              help="[default: 64 classification, 16 segmentation / detection]")
@click.option("--lr", type=float, default=None,
              help="Fine-tuning learning rate [default: 0.001 classification; 0.01 / 0.02 x "
                   "batch-size/16 segmentation / detection].")
@click.option("--weight-decay", type=float, default=None,
              help="[default: 5e-4 classification, 1e-4 segmentation / detection]")
@click.option("--momentum", default=0.9, show_default=True)
@click.option("--schedule", type=click.Choice(TRANSFER_SCHEDULES), default=None,
              help="step: x0.1 every --lr-step epochs (default: each third); poly: (1-t)^0.9; "
                   "multistep: x0.1 at 2/3 and 8/9 [default: step / poly / multistep by task].")
@click.option("--lr-step", type=float, default=None, help="Epochs between x0.1 steps.")
@click.option("--image-size", type=int, default=None,
              help="Input size S; segmentation: the crop; detection: the longer side "
                   "[default: the student's pre-training size (classification), else from the "
                   "data: median image side rounded to 8].")
@click.option("--seg-head", type=click.Choice(SEG_HEADS), default="psp",
              show_default=True, help="Segmentation head (PSP: the paper's PSPNet).")
@click.option("--seeds", default="0,1,2", show_default=True, callback=_seeds,
              help="Comma-separated seeds; results report mean ± std over them.")
@click.option("--test-fraction", default=0.2, show_default=True,
              help="Test share of the seeded stratified split (datasets without test/).")
@click.option("--split-seed", default=0, show_default=True, help="Seed of that split.")
@click.option("--workers", default=2, show_default=True, help="DataLoader decode workers.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--precision", default="auto", show_default=True,
              type=click.Choice(PRECISIONS),
              help="Autocast: auto = bf16 where the hardware supports it.")
@click.option("--resume", is_flag=True, help="Continue an interrupted fine-tune in --out.")
@click.option("--keep-checkpoint", is_flag=True,
              help="Keep each seed's checkpoint.pt (weights + optimizer state) after the run "
                   "finishes; by default they are removed once results.json is saved (they "
                   "only serve --resume).")
@click.option("--allow-leakage", is_flag=True,
              help="Run even if downstream test images were pre-training images.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@_run
def transfer(as_json, **kw):
    """Transfer a student to a downstream task (mean ± std over seeds): classification (linear
    probe or fine-tune), segmentation (mIoU) or detection (AP)."""
    checks.transfer_args(kw)  # before torch is imported or anything is written
    from ..transfer import TransferConfig
    from ..transfer import transfer as run
    emit(run(TransferConfig(**kw)), as_json)


@main.command()
@click.argument("result_dirs", nargs=-1, required=True, type=click.Path())
@click.option("--metric", default="final", show_default=True,
              help="final (top-1, final epoch; mIoU / AP for segmentation / detection), best "
                   "(best-epoch top-1, paper), balanced, class:NAME (per-class accuracy), "
                   "miou, pixel_acc, ap, ap50, ap75.")
@click.option("--csv", "csv_path", type=click.Path(), default=None, help="Also write CSV here.")
@click.option("--markdown", type=click.Path(), default=None, help="Also write Markdown here.")
@click.option("--json", "json_path", type=click.Path(), default=None,
              help="Also write the table as JSON here (cells with per-seed values and, with a "
                   "teacher row, each row's % of teacher).")
@click.option("--plot", type=click.Path(), default=None, help="Bar chart PNG (needs matplotlib).")
@_run
def compare(result_dirs, metric, csv_path, markdown, json_path, plot):
    """Tabulate transfer results: students x datasets (+ mean), mean ± std over seeds."""
    from ..transfer import compare as cmp
    table = cmp.build_table(list(result_dirs), metric)
    for path, text in ((csv_path, cmp.to_csv), (markdown, cmp.to_markdown),
                       (json_path, cmp.to_json)):
        if path:
            data = text(table).encode()
            _parent(path)
            atomic_write(path, lambda p, d=data: p.write_bytes(d))
    if plot:
        _parent(plot)
        cmp.plot(table, plot)
    click.echo(cmp.format_text(table), nl=False)
    log = logging.getLogger("kdep_cache.compare")
    for note in table.notes:
        log.warning("%s", note)
    if table.missing:
        log.warning("not in the table (%d of %d: no results.json, unfinished or failed): %s",
                    len(table.missing), len(result_dirs), ", ".join(table.missing))


def _parent(path: str) -> None:
    if not Path(path).resolve().parent.is_dir():
        raise InputError(f"the folder of {path} does not exist")
