"""``info`` and ``verify``: what an artifact is, what it was built from, whether its bytes are intact.

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
import numpy as np

from .cache.schema import ARRAY_ATTR, MANIFEST, PROJECTION, RAW, STUDENT, TARGETS, TRANSFER
from .errors import ArtifactError
from .fsio import fingerprint, read_json, sha256_file

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
        doc = read_json(p / MANIFEST if (p / MANIFEST).is_file() else p / CONFIG)
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


def _cache_chain(cache_dir, cache_fp: str | None, images_fp: str | None = None,
                 this: bool = False) -> list[dict]:
    d = Path(cache_dir) if cache_dir else None
    m = _manifest(d) if d else None
    imgs = d / IMAGES if d else None
    root = read_json(imgs).get("root") if imgs is not None and imgs.is_file() else None
    s = (m or {}).get("settings", {})
    chain = [_node("images", images_fp or s.get("images"), root,
                   _images_fp(imgs) if imgs is not None and imgs.is_file() else None,
                   n_images=s.get("n_images"))]
    if cache_fp is not None or this:
        chain.append(_node("cache", cache_fp, d, (m or {}).get("fingerprint"), this))
    return chain


def _student_chain(lin: dict, argv: list | None) -> list[dict]:
    """images -> cache -> projection -> targets from a student's recorded ``lineage``."""
    cache_dir = Path(lin["images_file"]).parent if lin.get("images_file") else None
    chain = _cache_chain(cache_dir, lin.get("cache"), lin.get("images"))
    if cache_dir is None:  # no cache (supervised): the images are a folder
        chain = [_node("images", lin.get("images"), lin.get("images_root"), None)]
    if lin.get("targets"):
        tdir = None  # the targets path is not recorded; use the command line if it was absolute
        if argv and "--targets" in argv[:-1] and Path(argv[argv.index("--targets") + 1]).is_absolute():
            tdir = Path(argv[argv.index("--targets") + 1])
        proj = tdir / "projection.h5" if tdir else None
        pfp = _h5_attrs(proj).get("fingerprint") if proj and proj.is_file() else None
        chain.append(_node("projection", lin.get("projection"), proj, pfp))
        chain.append(_node("targets", lin["targets"], tdir, (_manifest(tdir) or {}).get("fingerprint")))
    return chain


def info(path: str | Path) -> dict:
    """A summary of the artifact at ``path`` (see module docstring), JSON-serialisable."""
    kind, p = locate(path)
    out = {"path": str(p.resolve()), "kind": kind, "bytes_on_disk": _size(p)}
    if kind in ("raw-cache", "targets"):
        m = _manifest(p)
        s = m["settings"] if m else read_json(p / CONFIG)
        shards = sorted(p.glob("shard-*.h5"))
        out.update(format=s["format"], format_version=(m or {}).get("format_version"),
                   complete=m is not None, fingerprint=(m or {}).get("fingerprint"),
                   images=s.get("n_images"), views=s.get("views"), dtype=s.get("dtype"),
                   dim=(m or {}).get("dim") or s.get("dim") or s.get("teacher", {}).get("dim"),
                   arrays=(m or {}).get("arrays"), shards=len(m["shards"]) if m else len(shards),
                   bytes_shards=sum(f.stat().st_size for f in shards),
                   skipped=len(m["skipped"]) if m else None,
                   skipped_examples=(m or {}).get("skipped", [])[:3])
        if kind == "raw-cache":
            out.update(teacher=s.get("teacher"), augment=s.get("augment"),
                       image_size=s.get("image_size"), seed=s.get("seed"),
                       precision=s.get("precision"))
            out["lineage"] = _cache_chain(p, out["fingerprint"], this=True)
        else:
            src = (m or {}).get("source_cache")
            out.update(spec=s.get("spec"), fit_views=s.get("fit_views"), source_cache=src,
                       **{k: (m or {}).get(k) for k in ("explained_variance", "fitted_samples",
                                                        "std_ratio")})
            proj = p / "projection.h5"
            pfp = _h5_attrs(proj).get("fingerprint") if proj.is_file() else None
            out["lineage"] = _cache_chain(src, s.get("cache")) + [
                _node("projection", s.get("projection"), proj, pfp),
                _node("targets", out["fingerprint"], p, out["fingerprint"], True)]
    elif kind == "projection":
        a = _h5_attrs(p)
        m = _manifest(p.parent)
        src = m.get("source_cache") if m and m.get("projection_fingerprint") == a["fingerprint"] else None
        with h5py.File(p, "r") as f:
            shape = f["weight"].shape
        out.update(format=a["format"], format_version=a.get("format_version"), complete=True,
                   fingerprint=a["fingerprint"], spec=a.get("spec"), teacher_dim=shape[0],
                   dim=shape[1], fit_views=a.get("fit_views"), dtype="float64",
                   fitted_samples=a.get("fitted_samples"),
                   explained_variance=a.get("explained_variance"))
        out["lineage"] = _cache_chain(src, a.get("cache")) + [
            _node("projection", a["fingerprint"], p, a["fingerprint"], True)]
    elif kind == "student":
        side = read_json(p / SIDECAR) if (p / SIDECAR).is_file() else None
        if side is not None and side.get("format") != STUDENT:
            raise ArtifactError(f"{p / SIDECAR} is not a train-student sidecar")
        side = side or {}
        hist = side.get("history") or []
        out.update(format=side.get("format", STUDENT), format_version=side.get("format_version"),
                   complete=bool(side) and (p / STUDENT_FILE).is_file(),
                   fingerprint=side.get("fingerprint"), student=side.get("student"),
                   feature_dim=side.get("feature_dim"), input=side.get("input"),
                   objective=(side.get("settings") or {}).get("objective"),
                   epochs=len(hist), final_loss=hist[-1].get("loss") if hist else None,
                   images=(side.get("lineage") or {}).get("n_images"),
                   checkpoint=(p / CHECKPOINT).is_file())
        out["lineage"] = _student_chain(side.get("lineage") or {}, side.get("argv")) + [
            _node("student", out["fingerprint"], p, out["fingerprint"], True)]
    else:
        r = read_json(p / RESULTS)
        if r.get("format") != TRANSFER:
            raise ArtifactError(f"{p / RESULTS} is not a transfer result (format {TRANSFER!r})")
        st = r.get("student") or {}
        spath = Path(st["weights"]).parent if st.get("weights") else None
        sfp = (read_json(spath / SIDECAR).get("fingerprint")
               if spath and (spath / SIDECAR).is_file() else None)
        out.update(format=r["format"], format_version=r.get("format_version"), complete=True,
                   fingerprint=r.get("settings_fingerprint"), student=st.get("label"),
                   dataset=(r.get("dataset") or {}).get("path"),
                   mode=(r.get("protocol") or {}).get("mode"), summary=r.get("summary"),
                   leakage=r.get("leakage"))
        head = _student_chain(st.get("lineage") or {}, None) if st.get("lineage") else []
        w = Path(st["weights"]) if st.get("weights") else None
        student = _node("student", st.get("fingerprint"), spath, sfp) if st.get(
            "kind") == "run" else _node("student", st.get("weights_sha256"), w,
                                        sha256_file(w) if w and w.is_file() else None)
        out["lineage"] = head + [student, _node("transfer", out["fingerprint"], p,
                                                out["fingerprint"], True)]
    return out


def _check(files: list, problems: list, name: str, status: str, detail: str = "") -> None:
    files.append({"file": name, "status": status, "detail": detail})
    if status in ("corrupt", "missing", "extra", "mismatch", "incomplete"):
        problems.append(f"{status}: {name}" + (f" ({detail})" if detail else ""))


def _verify_projection(p: Path, files: list, problems: list, expect: str | None = None) -> None:
    """Recompute the projection fingerprint from its arrays (fit-svd's own recipe)."""
    try:
        a = _h5_attrs(p)
        with h5py.File(p, "r") as f:
            arrays = {k: hashlib.sha256(np.ascontiguousarray(f[k][()]).tobytes()).hexdigest()
                      for k in PROJ_ARRAYS}
    except (ArtifactError, OSError, KeyError) as e:
        return _check(files, problems, p.name, "corrupt", f"unreadable: {e}")
    fp = fingerprint({"spec": a.get("spec"), "cache": a.get("cache"),
                      "fit_views": a.get("fit_views"), "n": a.get("fitted_samples"),
                      "arrays": arrays})
    if fp != a.get("fingerprint"):
        _check(files, problems, p.name, "corrupt", "arrays do not match its recorded fingerprint")
    elif expect is not None and fp != expect:
        _check(files, problems, p.name, "mismatch", f"fingerprint {fp[:16]} is not the "
               f"manifest's projection {expect[:16]}")
    else:
        _check(files, problems, p.name, "ok", "fingerprint recomputed from its arrays")


def _verify_store(p: Path, files: list, problems: list, notes: list) -> None:
    m = _manifest(p)
    listed = {e["file"] for e in (m or {}).get("shards", [])}
    if m is None:
        _check(files, problems, MANIFEST, "incomplete", "no manifest: the run did not finish; "
               "rerun the same command to resume")
        for f in sorted(p.glob("shard-*.h5")):
            side = f.with_suffix(".json")
            rec = read_json(side).get("sha256") if side.is_file() else None
            _check(files, problems, f.name, "unverified" if rec is None else
                   ("ok" if sha256_file(f) == rec else "corrupt"),
                   "no checksum recorded" if rec is None else "against its sidecar")
        return
    for e in m["shards"]:
        f = p / e["file"]
        if not f.is_file():
            _check(files, problems, e["file"], "missing")
        elif f.stat().st_size != e["bytes"]:
            _check(files, problems, e["file"], "corrupt", f"{f.stat().st_size} bytes, "
                   f"manifest says {e['bytes']}")
        else:
            got = sha256_file(f)
            _check(files, problems, e["file"], "ok" if got == e["sha256"] else "corrupt",
                   "" if got == e["sha256"] else f"sha256 {got[:16]} != manifest {e['sha256'][:16]}")
    for f in sorted(p.glob("shard-*.h5")):
        if f.name not in listed:
            _check(files, problems, f.name, "extra", "a shard file that is not in the manifest")
    fp = fingerprint({"settings": m["settings"], "contents": [e["content"] for e in m["shards"]]})
    _check(files, problems, MANIFEST, "ok" if fp == m.get("fingerprint") else "corrupt",
           "" if fp == m.get("fingerprint") else "fingerprint does not match its own contents")
    img = m["settings"].get("images", "")
    if m["format"] == RAW and len(img) == 64:
        found = _images_fp(p / IMAGES)
        _check(files, problems, IMAGES, "ok" if found == img else "corrupt",
               "" if found == img else "image list does not match the manifest")
    if m["format"] == TARGETS:
        proj = p / "projection.h5"
        if not proj.is_file():
            _check(files, problems, proj.name, "missing")
        else:
            _verify_projection(proj, files, problems, m.get("projection_fingerprint"))


def _verify_student(p: Path, files: list, problems: list, notes: list) -> None:
    import torch

    from .train.student import _weights_digest
    if not (p / SIDECAR).is_file():
        _check(files, problems, SIDECAR, "incomplete", "training did not finish; rerun with "
               "--resume")
    if (p / CHECKPOINT).is_file():
        notes.append(f"{CHECKPOINT}: no checksum recorded; only checked that it loads")
        try:
            torch.load(p / CHECKPOINT, map_location="cpu", weights_only=True)
            _check(files, problems, CHECKPOINT, "unverified", "no checksum recorded; loads")
        except Exception as e:  # noqa: BLE001 - any failure to load is corruption here
            _check(files, problems, CHECKPOINT, "corrupt", f"does not load: {type(e).__name__}")
    if not (p / SIDECAR).is_file():
        return
    side = read_json(p / SIDECAR)
    if not (p / STUDENT_FILE).is_file():
        return _check(files, problems, STUDENT_FILE, "missing")
    try:
        sd = torch.load(p / STUDENT_FILE, map_location="cpu", weights_only=True)
        fp = fingerprint({"settings": side["settings"], "weights": _weights_digest(sd)})
    except Exception as e:  # noqa: BLE001
        return _check(files, problems, STUDENT_FILE, "corrupt", f"does not load: {type(e).__name__}")
    _check(files, problems, STUDENT_FILE, "ok" if fp == side.get("fingerprint") else "corrupt",
           "weights match the sidecar fingerprint" if fp == side.get("fingerprint")
           else "weights do not match the sidecar fingerprint")


def verify(path: str | Path) -> dict:
    """Recompute every checksum an artifact records; list corrupt, missing and extra files."""
    kind, p = locate(path)
    files: list[dict] = []
    problems: list[str] = []
    notes: list[str] = []
    if kind in ("raw-cache", "targets"):
        _verify_store(p, files, problems, notes)
    elif kind == "projection":
        _verify_projection(p, files, problems)
    elif kind == "student":
        _verify_student(p, files, problems, notes)
    else:
        r = read_json(p / RESULTS)
        fp = fingerprint({k: r.get(k) for k in ("student", "dataset", "protocol")})
        ok = fp == r.get("settings_fingerprint")
        _check(files, problems, RESULTS, "unverified" if ok else "corrupt",
               "no checksum recorded; its settings fingerprint is consistent" if ok
               else "settings do not match its settings_fingerprint")
    root = p.parent if p.is_file() else p
    for t in sorted(root.glob("*.tmp")):
        notes.append(f"{t.name}: temporary file left by an interrupted run (never read; "
                     "safe to delete when no run is active)")
    return {"path": str(p.resolve()), "kind": kind, "ok": not problems, "problems": problems,
            "files": files, "notes": notes}
