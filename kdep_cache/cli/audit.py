"""The ``info`` and ``verify`` subcommands (read-only; they never write into an artifact)."""

from __future__ import annotations

import json

import click

from .base import _run, main

_SHOWN = ("kind", "format", "format_version", "complete", "fingerprint", "images", "views",
          "dim", "teacher_dim", "feature_dim", "dtype", "arrays", "layers", "grid", "shards",
          "skipped", "student",
          "objective", "epochs", "final_loss", "spec", "fit_views", "fitted_samples",
          "explained_variance", "image_size", "seed", "precision", "dataset", "mode",
          "checkpoint")


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def _short(v):
    if isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v):
        return v[:16]
    return v


def format_info(d: dict) -> str:
    """Human-readable ``info``: key facts, teacher and augmentation, then the lineage chain."""
    lines = [f"{'path':>18}: {d['path']}"]
    for k in _SHOWN:
        if d.get(k) is not None:
            v = d[k] if k != "fingerprint" else _short(d[k])
            lines.append(f"{k:>18}: {json.dumps(v) if isinstance(v, (dict, list)) else v}")
    lines.append(f"{'on disk':>18}: {_mib(d['bytes_on_disk'])}")
    for name, n in (d.get("file_bytes") or {}).items():
        lines.append(f"{name:>18}: {_mib(n)}")
    t = d.get("teacher")
    if t:
        lines.append(f"{'teacher':>18}: {t.get('name')} ({t.get('weights')}, sha256 "
                     f"{str(t.get('weights_sha256'))[:16]}), {t.get('feature_layer')}, "
                     f"dim {t.get('dim')}, norm {t.get('norm')}"
                     + (f" (mean {_rounded(t['mean'])}, std {_rounded(t['std'])})"
                        if t.get("mean") else ""))
    if d.get("augment"):
        lines.append(f"{'augmentation':>18}: " + ", ".join(f"{k}={v}" for k, v in
                                                         d["augment"].items()))
    if d.get("pack"):  # extract --pack: the images are in the cache
        from ..extract.packing import pack_line
        p = d["pack"]
        lines.append(f"{'pack':>18}: " + (pack_line(p) if "bytes" in p else
                                         f"{p['spec']} (cache not complete)")
                     + "; no stage reads the image folder")
    elif d.get("kind") == "raw-cache":
        lines.append(f"{'pack':>18}: none (train-student and diagnose read the image folder)")
    for s in d.get("skipped_examples") or []:
        lines.append(f"{'skipped e.g.':>18}: {s.get('path')}: {s.get('reason')}")
    scan = d.get("scan") or {}
    if scan.get("ignored"):
        by = ", ".join(f"{e} {n}" for e, n in sorted(scan["ignored"].items(),
                                                      key=lambda kv: -kv[1]))
        lines.append(f"{'ignored files':>18}: {sum(scan['ignored'].values())} ({by})")
    for s in scan.get("skipped_dirs") or []:
        lines.append(f"{'folder not read':>18}: {s.get('path')}: {s.get('reason')}")
    for k, v in (d.get("summary") or {}).items():
        lines.append(f"{k:>18}: {v}")
    lines.append("lineage (upstream first; ok = fingerprint compared with the artifact at "
                 "that path; `verify` re-hashes contents):")
    for i, n in enumerate(d.get("lineage") or []):
        lines.append("  " + ("   " if i == 0 else "-> ") + link_text(n))
    return "\n".join(lines)


def link_text(n: dict) -> str:
    """``stage  fingerprint  path (N images)  [ok | MISMATCH: found X | not checked: why]``."""
    where = n["path"] or "(path not recorded)"
    extra = f" ({n['n_images']} images)" if n.get("n_images") else ""
    status = {"mismatch": f"MISMATCH: found {_short(n['found'])}",
              "not checked": f"not checked: {n.get('why')}"}.get(n["status"], n["status"])
    return f"{n['stage']:<10} {_short(n['fingerprint']) or '-':<16}  {where}{extra}  [{status}]"


@main.command()
@click.argument("path", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the information as JSON.")
@_run
def info(path, as_json):
    """Describe a cache, targets dir, projection.h5, student run or transfer result."""
    from ..audit.info import info as run
    d = run(path)
    click.echo(json.dumps(d, indent=1, default=str) if as_json else format_info(d))


@main.command()
@click.argument("path", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@_run
def verify(path, as_json):
    """Recompute the checksums of an artifact; exit 1 if anything is corrupt, missing or
    mismatched (extra files, which no stage reads, are listed)."""
    from ..audit.verify import verify as run
    r = run(path)
    if as_json:
        click.echo(json.dumps(r, indent=1, default=str))
    else:
        for p in r["problems"]:
            click.echo(p)
        for f in r["files"]:
            if f["status"] == "extra":  # listed; never read, so not a failure
                click.echo(f"extra: {f['file']} ({f['detail']})")
        for n in r["notes"]:
            click.echo(f"note: {n}")
        for f in r["files"]:
            if f["status"] in ("unverified", "not checked"):
                click.echo(f"not checked: {f['file']} ({f['detail']})")
        checked = sum(f["status"] == "ok" for f in r["files"])
        unchecked = sum(f["status"] in ("unverified", "not checked") for f in r["files"])
        click.echo(f"{'ok' if r['ok'] else 'FAILED'}: {r['kind']} {r['path']}: {checked} "
                   f"verified, {unchecked} not checkable, {len(r['problems'])} problems")
    if not r["ok"]:
        click.get_current_context().exit(1)


def _rounded(v) -> str:
    return "(" + ", ".join(f"{x:.4g}" for x in v) + ")"
