"""The ``diagnose`` subcommand: the paper's teacher diagnostics of a raw cache (JSON + PNG).

A plain click command; :mod:`.cli` registers it on the main group.
"""

from __future__ import annotations

import click

from .. import checks
from .base import _run, emit


@click.command("diagnose")
@click.argument("cache", type=click.Path())
@click.option("--out", required=True, type=click.Path(),
              help="Folder for diagnose.json and the PNG figures.")
@click.option("--targets", type=click.Path(), default=None,
              help="A fit-svd output of this cache: adds the projected features' Std Ratios.")
@click.option("--views", default="0", show_default=True,
              help="Views whose rows are measured: indices like 0,1 or 'all'.")
@click.option("--tsne-points", default=1000, show_default=True,
              help="Images in the t-SNE map (a seeded subsample; 0 skips t-SNE).")
@click.option("--seed", default=0, show_default=True, help="Seed of the t-SNE subsample.")
@click.option("--downstream", type=click.Path(), default=None,
              help="A downstream image folder: how much of its teacher-feature variance the "
                   "cache's top-D directions keep, and how far it lies from the cache's images "
                   "(loads the cache's teacher).")
@click.option("--dim", type=int, default=None,
              help="D of the --downstream check: the --targets width, else min(512, teacher).")
@click.option("--max-images", default=500, show_default=True,
              help="Images of each set the --downstream check runs the teacher on.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:N].")
@click.option("--no-plots", is_flag=True, help="Write diagnose.json only (no matplotlib).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@_run
def diagnose(cache, out, targets, views, tsne_points, seed, downstream, dim, max_images, device,
             no_plots, as_json):
    """Std Ratios, explained-variance spectrum, compactness and t-SNE of a teacher cache."""
    checks.diagnose_args({"out": out, "tsne_points": tsne_points, "seed": seed, "dim": dim,
                          "max_images": max_images})
    from ..diagnose.report import REPORT
    from ..diagnose.report import diagnose as run
    r = run(cache, out, targets=targets, views=views, tsne_points=tsne_points, seed=seed,
            plots=not no_plots, downstream=downstream, dim=dim, max_images=max_images,
            device=device)
    c = r["compactness"]
    summary = {"out": out, "report": REPORT, "samples": r["rows"]["samples"],
               "std_ratio_raw": round(r["std_ratio"]["raw"], 3),
               **({f"std_ratio_{k}": round(v, 3) for k, v in r["std_ratio_projected"].items()
                   if k != "real_directions"} if "std_ratio_projected" in r else {}),
               "rank": r["spectrum"]["rank"],
               "components_90pct": r["spectrum"]["components_for"]["90%"],
               "compactness": round(c["compactness"], 4) if c["available"] else c["reason"],
               **({"downstream_check": r["downstream_check"]["headline"]}
                  if "downstream_check" in r else {}),
               "figures": ", ".join(r.get("figures", {}).values()) or "none (--no-plots)"}
    emit(summary, as_json)
