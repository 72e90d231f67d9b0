"""PNG figures of a :func:`kdep_cache.diagnose.report.diagnose` report (matplotlib, Agg canvas).

Figures are built on :class:`matplotlib.figure.Figure` directly (never ``pyplot``), so no
global backend is selected, no GUI is touched, and nothing is logged; each PNG is written
atomically.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..storage.fsio import atomic_write

FIGURES = {"std": "channel-std.png", "spectrum": "spectrum.png", "tsne": "tsne.png"}


def _figure(w: float = 6.4, h: float = 4.0):
    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # no font_manager INFO lines
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> str:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    return path.name


def write_plots(report: dict, out: Path) -> dict:
    """Write every figure the report has data for; return {name: file name}."""
    out.mkdir(parents=True, exist_ok=True)
    files = {"std": _save(_std(report), out / FIGURES["std"]),
             "spectrum": _save(_spectrum(report), out / FIGURES["spectrum"])}
    if report["tsne"].get("available"):
        files["tsne"] = _save(_tsne(report), out / FIGURES["tsne"])
    return files


def _std(r: dict):
    fig = _figure()
    ax = fig.add_subplot()
    curves = {"raw teacher feature": r["channel_std"]["raw"]}
    ratios = {"raw teacher feature": r["std_ratio"]["raw"]}
    if "channel_std_projected" in r:
        live = np.asarray(r["channel_std_projected"]["aligned"]) > 0
        for k, name in (("aligned", "projected (aligned)"), ("transformed", "projected + transform")):
            curves[name] = np.asarray(r["channel_std_projected"][k])[live]
            ratios[name] = r["std_ratio_projected"][k]
    for name, std in curves.items():
        s = np.sort(np.asarray(std))[::-1]
        ax.plot(np.arange(1, len(s) + 1), s, label=f"{name} (Std Ratio {ratios[name]:.3g})")
    ax.set_yscale("log")
    ax.set_xlabel("channel (sorted by std)")
    ax.set_ylabel("per-channel std")
    ax.set_title("Per-channel std (Std Ratio = largest / smallest)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _spectrum(r: dict):
    fig = _figure()
    ax = fig.add_subplot()
    s = r["spectrum"]
    evr = np.asarray(s["explained_variance_ratio"])
    k = np.arange(1, len(evr) + 1)
    ax.plot(k, np.clip(evr, 1e-12, None), color="C0")
    ax.set_yscale("log")
    ax.set_xlabel("principal component")
    ax.set_ylabel("explained variance ratio", color="C0")
    ax2 = ax.twinx()
    ax2.plot(k, s["cumulative"], color="C1")
    ax2.set_ylim(0, 1.02)
    ax2.set_ylabel("cumulative", color="C1")
    cf = s["components_for"]
    ax.set_title(f"Raw feature spectrum: rank {s['rank']}; 90% in {cf['90%']}, "
                 f"99% in {cf['99%']} components", fontsize=9)
    fig.tight_layout()
    return fig


def _tsne(r: dict):
    fig = _figure(5.6, 5.0)
    ax = fig.add_subplot()
    t = r["tsne"]
    emb, lab = np.asarray(t["embedding"]), np.asarray(t["labels"])
    names = r.get("class_names") or []
    if np.any(lab >= 0):
        for c in np.unique(lab):
            sel = lab == c
            name = names[c] if 0 <= c < len(names) else ("unlabelled" if c < 0 else str(c))
            ax.scatter(emb[sel, 0], emb[sel, 1], s=6, label=name)
        ax.legend(fontsize=7, markerscale=2, loc="best")
    else:
        ax.scatter(emb[:, 0], emb[:, 1], s=6, color="C0")
    c = r["compactness"]
    extra = f"; compactness {c['compactness']:.3g}" if c.get("available") else ""
    ax.set_title(f"t-SNE of {len(emb)} teacher features (view {t['view']}){extra}", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    return fig
