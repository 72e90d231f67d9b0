"""``info``: what an artifact is and what it was built from (``verify.py``: whether it is intact).

Artifacts: a raw cache or targets store (directory with ``manifest.json``, or an unfinished one
with only ``config.json``), ``projection.h5``, a train-student run (or its ``student.pth`` /
``student.json``) and a transfer result directory (``results.json``). The lineage is the
chain images -> cache -> projection -> targets -> student -> transfer, each link given by the
fingerprint recorded downstream and, where a path is recorded and still exists, checked
against the fingerprint found there.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import h5py

from .cache.schema import ARRAY_ATTR, MANIFEST, PROJECTION, RAW, STUDENT, TARGETS, TRANSFER
from .errors import ArtifactError
from .fsio import read_json, sha256_file

# file names of train.student / train.loop / transfer.run (not imported: those pull in torch)
STUDENT_FILE, SIDECAR, CHECKPOINT, RESULTS, CONFIG, IMAGES = (
    "student.pth", "student.json", "checkpoint.pt", "results.json", "config.json", "images.json")
KIND = {RAW: "raw-cache", TARGETS: "targets"}
PROJ_ARRAYS = ("center", "weight", "scale", "eigenvalues", "raw_std")


def locate(path: str | Path) -> tuple[str, Path]:
    """``(kind, artifact path)``; raises :class:`ArtifactError` for anything else."""
    p = Path(path)
    if not p.exists():
        raise ArtifactError(f"{p} does not exist")
    if p.is_file():
        if p.name in (STUDENT_FILE, SIDECAR):
            return "student", p.parent
        if p.name == RESULTS:
            return "transfer", p.parent
        fmt = _h5_attrs(p).get("format") if p.suffix == ".h5" else None
        if fmt == PROJECTION:
            return "projection", p
        if fmt in KIND:
            raise ArtifactError(f"{p} is one shard of a {KIND[fmt]} store: inspect {p.parent}")
    elif (p / MANIFEST).is_file() or (p / CONFIG).is_file():
        doc = _manifest(p) or (read_json(p / CONFIG) if (p / CONFIG).is_file() else {})
        if isinstance(doc, dict) and doc.get("format") in KIND:
            return KIND[doc["format"]], p
    elif any((p / f).is_file() for f in (SIDECAR, STUDENT_FILE, CHECKPOINT)):
        return "student", p
    elif (p / RESULTS).is_file():
        return "transfer", p
    raise ArtifactError(f"{p} is not a kdep-cache artifact (cache, targets, projection.h5, "
                        "student run or transfer result)")


def _h5_attrs(path: Path) -> dict:
    try:
        with h5py.File(path, "r") as f:
            return json.loads(f.attrs[ARRAY_ATTR])
    except (OSError, KeyError, ValueError, TypeError):
        raise ArtifactError(f"{path} is not a kdep-cache HDF5 file") from None


def _size(p: Path) -> int:
    return p.stat().st_size if p.is_file() else sum(f.stat().st_size for f in p.rglob("*")
                                                     if f.is_file())


def _images_fp(images_json: Path) -> str | None:
    try:
        return hashlib.sha256("\n".join(read_json(images_json)["paths"]).encode()).hexdigest()
    except (OSError, ArtifactError, KeyError, TypeError):
        return None


def _node(stage: str, fp: str | None, path, found: str | None, this: bool = False, **kw) -> dict:
    """One lineage link: the recorded fingerprint vs the one found at the recorded path."""
    if this:
        status = "this"
    elif path is None:
        status = "path not recorded"
    elif found is None:
        status = "missing"
    else:
        status = "ok" if found == fp else "mismatch"
    return {"stage": stage, "fingerprint": fp,
            "path": None if path is None else str(Path(path).resolve()),
            "found": found, "status": status, **kw}


def _manifest(d: Path | None) -> dict | None:
    try:
        m = read_json(d / MANIFEST) if d is not None and (d / MANIFEST).is_file() else None
    except ArtifactError:
        return None
    return m if isinstance(m, dict) else None


def _proj_fp(path: Path | None) -> str | None:
    try:
        return _h5_attrs(path).get("fingerprint") if path and path.is_file() else None
    except ArtifactError:
        return None


def _cache_chain(cache_dir, cache_fp: str | None, images_fp: str | None = None,
                 this: bool = False) -> list[dict]:
    """images -> cache, checked against the cache directory (if its path is known)."""
    d = Path(cache_dir) if cache_dir else None
    m = (_manifest(d) if d else None) or {}
    imgs = d / IMAGES if d else None
    s = m.get("settings") or (read_json(d / CONFIG) if this and (d / CONFIG).is_file() else {})
    try:
        root = read_json(imgs).get("root") if imgs and imgs.is_file() else None
    except ArtifactError:
        root = None
    chain = [_node("images", images_fp or s.get("images"), root,
                   _images_fp(imgs) if imgs else None, n_images=s.get("n_images"))]
    if cache_fp is not None or this:
        chain.append(_node("cache", cache_fp, d, m.get("fingerprint"), this))
    return chain


def _student_chain(lin: dict, argv: list | None) -> list[dict]:
    """images -> cache -> projection -> targets from a student's recorded ``lineage``."""
    if lin.get("images_file"):
        chain = _cache_chain(Path(lin["images_file"]).parent, lin.get("cache"), lin.get("images"))
    else:  # no cache (supervised baseline): a folder of images
        chain = [_node("images", lin.get("images"), lin.get("images_root"), None)]
    if lin.get("targets"):
        tdir = None  # the targets path is not recorded; use the command line if it was absolute
        if argv and "--targets" in argv[:-1]:
            arg = Path(argv[argv.index("--targets") + 1])
            tdir = arg if arg.is_absolute() else None
        proj = tdir / "projection.h5" if tdir else None
        chain.append(_node("projection", lin.get("projection"), proj, _proj_fp(proj)))
        chain.append(_node("targets", lin["targets"], tdir,
                           (_manifest(tdir) or {}).get("fingerprint") if tdir else None))
    return chain


def _info_store(p: Path, kind: str) -> dict:
    m = _manifest(p) or {}
    s = m.get("settings") or read_json(p / CONFIG)
    shards = sorted(p.glob("shard-*.h5"))
    out = {"format": s["format"], "format_version": m.get("format_version"), "complete": bool(m),
           "fingerprint": m.get("fingerprint"), "images": s.get("n_images"),
           "views": s.get("views"), "dtype": s.get("dtype"),
           "dim": m.get("dim") or s.get("dim") or s.get("teacher", {}).get("dim"),
           "arrays": m.get("arrays"), "shards": len(m["shards"]) if m else len(shards),
           "bytes_shards": sum(f.stat().st_size for f in shards),
           "skipped": len(m["skipped"]) if m else None,
           "skipped_examples": m.get("skipped", [])[:3]}
    if kind == "raw-cache":
        out.update({k: s.get(k) for k in ("teacher", "augment", "image_size", "seed", "precision")})
        out["lineage"] = _cache_chain(p, out["fingerprint"], this=True)
        return out
    src = m.get("source_cache")
    out.update(spec=s.get("spec"), fit_views=s.get("fit_views"), source_cache=src,
               **{k: m.get(k) for k in ("explained_variance", "fitted_samples", "std_ratio")})
    proj = p / "projection.h5"
    out["lineage"] = _cache_chain(src, s.get("cache")) + [
        _node("projection", s.get("projection"), proj, _proj_fp(proj)),
        _node("targets", out["fingerprint"], p, out["fingerprint"], True)]
    return out


def _info_projection(p: Path) -> dict:
    a, m = _h5_attrs(p), _manifest(p.parent) or {}
    src = m.get("source_cache") if m.get("projection_fingerprint") == a["fingerprint"] else None
    with h5py.File(p, "r") as f:
        shape = f["weight"].shape
    out = {k: a.get(k) for k in ("format", "format_version", "fingerprint", "spec", "fit_views",
                                 "fitted_samples", "explained_variance")}
    out.update(complete=True, teacher_dim=shape[0], dim=shape[1], dtype="float64")
    out["lineage"] = _cache_chain(src, a.get("cache")) + [
        _node("projection", a["fingerprint"], p, a["fingerprint"], True)]
    return out


def _info_student(p: Path) -> dict:
    side = read_json(p / SIDECAR) if (p / SIDECAR).is_file() else {}
    if side and side.get("format") != STUDENT:
        raise ArtifactError(f"{p / SIDECAR} is not a train-student sidecar")
    hist, lin = side.get("history") or [], side.get("lineage") or {}
    out = {"format": side.get("format", STUDENT), "format_version": side.get("format_version"),
           "complete": bool(side) and (p / STUDENT_FILE).is_file(),
           "fingerprint": side.get("fingerprint"), "student": side.get("student"),
           "feature_dim": side.get("feature_dim"), "input": side.get("input"),
           "objective": (side.get("settings") or {}).get("objective"), "epochs": len(hist),
           "final_loss": hist[-1].get("loss") if hist else None, "images": lin.get("n_images"),
           "checkpoint": (p / CHECKPOINT).is_file(),
           "file_bytes": {f.name: f.stat().st_size for f in sorted(p.iterdir()) if f.is_file()}}
    out["lineage"] = _student_chain(lin, side.get("argv")) + [
        _node("student", out["fingerprint"], p, out["fingerprint"], True)]
    return out


def _info_transfer(p: Path) -> dict:
    r = read_json(p / RESULTS)
    if r.get("format") != TRANSFER:
        raise ArtifactError(f"{p / RESULTS} is not a transfer result (format {TRANSFER!r})")
    st = r.get("student") or {}
    w = Path(st["weights"]) if st.get("weights") else None
    out = {"format": r["format"], "format_version": r.get("format_version"), "complete": True,
           "fingerprint": r.get("settings_fingerprint"), "student": st.get("label"),
           "dataset": (r.get("dataset") or {}).get("path"),
           "mode": (r.get("protocol") or {}).get("mode"), "summary": r.get("summary"),
           "leakage": r.get("leakage")}
    if st.get("kind") == "run":  # a train-student run: its sidecar fingerprint
        side = w.parent / SIDECAR if w else None
        found = read_json(side).get("fingerprint") if side and side.is_file() else None
        student = _node("student", st.get("fingerprint"), w.parent if w else None, found)
    else:  # a plain state_dict (its sha256) or random:NAME (nothing to check)
        student = _node("student", st.get("weights_sha256"), w,
                        sha256_file(w) if w and w.is_file() else None, kind=st.get("kind"))
    head = _student_chain(st["lineage"], None) if st.get("lineage") else []
    out["lineage"] = head + [student, _node("transfer", out["fingerprint"], p,
                                            out["fingerprint"], True)]
    return out


def info(path: str | Path) -> dict:
    """A JSON-serialisable summary of the artifact at ``path``, with its lineage chain."""
    kind, p = locate(path)
    out = {"path": str(p.resolve()), "kind": kind, "bytes_on_disk": _size(p)}
    if kind in ("raw-cache", "targets"):
        out.update(_info_store(p, kind))
    else:
        out.update({"projection": _info_projection, "student": _info_student,
                    "transfer": _info_transfer}[kind](p))
    return out

