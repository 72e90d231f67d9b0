"""``verify``: recompute every checksum an artifact records; list corrupt, missing, extra files.

Artifacts are found by :func:`kdep_cache.inspect.locate` (the same kinds ``info`` reads).
"""

from __future__ import annotations

import math
from pathlib import Path

import h5py

from .cache.schema import MANIFEST, RAW, TARGETS
from .digest import array_sha
from .errors import ArtifactError
from .fsio import fingerprint, read_json, sha256_file
from .inspect import PROJ_ARRAYS, locate
from .integrity import predates_note, read_sidecar, student_fingerprint
from .lineage import h5_attrs, images_fp, manifest, transfer_student
from .names import (
    CHECKPOINT,
    CONFIG,
    IMAGES,
    PROJECTION_FILE,
    RESULTS,
    SIDECAR,
    STUDENT_FILE,
    STUDENT_SAFETENSORS,
)


class _Report:
    """Per-file results of :func:`verify`; problems are the one-line failures."""

    FAIL = ("corrupt", "missing", "extra", "mismatch", "incomplete")

    def __init__(self) -> None:
        self.files: list[dict] = []
        self.problems: list[str] = []
        self.notes: list[str] = []

    def add(self, name: str, status: str, detail: str = "") -> None:
        self.files.append({"file": name, "status": status, "detail": detail})
        if status in self.FAIL:
            self.problems.append(f"{status}: {name}" + (f" ({detail})" if detail else ""))

    def same(self, name: str, got, want, what: str, ok_detail: str = "") -> None:
        self.add(name, "ok" if got == want else "corrupt", ok_detail if got == want else what)


def _verify_projection(p: Path, rep: _Report, expect: str | None = None) -> None:
    """Recompute the projection fingerprint from its arrays (fit-svd's own recipe)."""
    try:
        a = h5_attrs(p)
        with h5py.File(p, "r") as f:
            arrays = {k: array_sha(f[k][()]) for k in PROJ_ARRAYS}
    except (ArtifactError, OSError, KeyError) as e:
        return rep.add(p.name, "corrupt", f"unreadable: {e}")
    fp = fingerprint({"spec": a.get("spec"), "cache": a.get("cache"),
                      "fit_views": a.get("fit_views"), "n": a.get("fitted_samples"),
                      "arrays": arrays})
    if fp == a.get("fingerprint") and expect not in (None, fp):
        return rep.add(p.name, "mismatch", f"{fp[:16]} is not the manifest's {expect[:16]}")
    rep.same(p.name, fp, a.get("fingerprint"), "arrays do not match its recorded fingerprint",
             "fingerprint recomputed from its arrays")


def _verify_store(p: Path, rep: _Report) -> None:
    m = manifest(p)
    if m is None:
        rep.add(MANIFEST, "corrupt" if (p / MANIFEST).exists() else "incomplete",
                "unreadable" if (p / MANIFEST).exists() else
                "the run did not finish; rerun the same command to resume")
        for f in sorted(p.glob("shard-*.h5")):  # finished shards, against their sidecars
            side = f.with_suffix(".json")
            rec = read_json(side).get("sha256") if side.is_file() else None
            if rec is None:
                rep.add(f.name, "unverified", "no checksum recorded")
            else:
                rep.same(f.name, sha256_file(f), rec, "sha256 differs from its sidecar")
        return
    for e in m["shards"]:
        f = p / e["file"]
        if not f.is_file():
            rep.add(e["file"], "missing")
        elif f.stat().st_size != e["bytes"]:
            rep.add(e["file"], "corrupt", f"{f.stat().st_size} bytes, manifest says {e['bytes']}")
        else:
            got = sha256_file(f)
            rep.same(e["file"], got, e["sha256"], f"sha256 {got[:16]} != manifest "
                     f"{e['sha256'][:16]}")
    listed = {e["file"] for e in m["shards"]}
    for f in sorted(p.glob("shard-*.h5")) + sorted(p.glob("shard-*.json")):
        if f.name not in listed and f.with_suffix(".h5").name not in listed:
            rep.add(f.name, "extra", "a shard file that is not in the manifest")
    known = listed | {Path(x).with_suffix(".json").name for x in listed} | {
        MANIFEST, CONFIG, IMAGES, PROJECTION_FILE}
    for f in sorted(p.iterdir()):
        if (f.name not in known and not f.name.startswith((".lock", "shard-"))
                and f.suffix != ".tmp"):
            rep.notes.append(f"{f.name}: not part of this {m['format'].split('/')[-1]} store "
                             "(never read)")
    fp = fingerprint({"settings": m["settings"], "contents": [e["content"] for e in m["shards"]]})
    rep.same(MANIFEST, fp, m.get("fingerprint"), "fingerprint does not match its own contents")
    img = m["settings"].get("images", "")
    if m["format"] == RAW and len(img) == 64:  # (synthetic test caches record no image list)
        if not (p / IMAGES).is_file():
            rep.add(IMAGES, "missing", "the image list of this cache")
        else:
            rep.same(IMAGES, images_fp(p / IMAGES), img, "image list does not match the "
                     "manifest (or is unreadable)")
    if m["format"] == TARGETS:
        proj = p / PROJECTION_FILE
        if proj.is_file():
            _verify_projection(proj, rep, m.get("projection_fingerprint"))
        else:
            rep.add(proj.name, "missing")


def _verify_student(p: Path, rep: _Report) -> None:
    import torch

    from .digest import state_sha, weights_sha
    from .models.weights import load_state_dict_file
    if (p / CHECKPOINT).is_file():
        try:
            state = torch.load(p / CHECKPOINT, map_location="cpu", weights_only=True)
            digest = state.pop("digest", None)
            if digest is None:
                rep.add(CHECKPOINT, "unverified", "written before checkpoints carried a "
                        "digest; it loads")
            else:
                rep.same(CHECKPOINT, state_sha(state), digest, "content does not match its "
                         "digest", f"digest recomputed (epoch {state.get('epoch')})")
        except Exception as e:  # noqa: BLE001 - any failure to load is corruption here
            rep.add(CHECKPOINT, "corrupt", f"does not load: {type(e).__name__}")
    if not (p / SIDECAR).is_file():
        return rep.add(SIDECAR, "incomplete", "training did not finish; rerun train-student "
                       "with --resume")
    try:
        side = read_sidecar(p / SIDECAR)
    except ArtifactError as e:
        return rep.add(SIDECAR, "corrupt", str(e))
    if note := predates_note(side, SIDECAR):
        rep.notes.append(note)
    if not (p / STUDENT_FILE).is_file():
        return rep.add(STUDENT_FILE, "missing")
    for name in (STUDENT_FILE, STUDENT_SAFETENSORS):  # the same tensors; safetensors: no pickle
        if name == STUDENT_SAFETENSORS and not (p / name).is_file():
            continue
        try:
            sd = load_state_dict_file(p / name) if name == STUDENT_SAFETENSORS else torch.load(
                p / name, map_location="cpu", weights_only=True)
            fp = student_fingerprint(side, weights_sha(sd))
        except Exception as e:  # noqa: BLE001 - any failure to load is corruption here
            rep.add(name, "corrupt", f"does not load: {type(e).__name__}")
            continue
        rep.same(name, fp, side["fingerprint"], "weights or sidecar fields do not match the "
                 "sidecar fingerprint", "weights and sidecar match its fingerprint")


def _verify_transfer(p: Path, rep: _Report) -> None:
    """results.json: its settings fingerprint, its summary recomputed from the per-seed
    results, and the student it names (sidecar fingerprint or weights sha256)."""
    r = read_json(p / RESULTS)
    settings = {k: r.get(k) for k in ("student", "dataset", "protocol")}
    rep.same(RESULTS, fingerprint(settings), r.get("settings_fingerprint"),
             "settings do not match its settings_fingerprint",
             "settings fingerprint recomputed")
    seeds, bad = r.get("seeds") or [], []
    for k, agg in (r.get("summary") or {}).items():
        vals = [s.get(k) for s in seeds]
        if not isinstance(agg, dict) or not all(isinstance(v, (int, float)) for v in vals):
            continue
        mean = sum(vals) / len(vals) if vals else float("nan")
        if agg.get("n") != len(vals) or not math.isclose(mean, agg.get("mean", math.nan),
                                                          rel_tol=1e-9, abs_tol=1e-9):
            bad.append(k)
    rep.add("summary", "corrupt" if bad else "ok",
            f"{', '.join(bad)} differ from the mean of the per-seed results" if bad else
            f"{len(r.get('summary') or {})} metrics = mean of {len(seeds)} seed results")
    link = transfer_student(r.get("student") or {})
    where = link["path"] or "?"
    if link["status"] == "ok" and link.get("kind") == "run":  # its weights, re-hashed
        sub = _Report()
        _verify_student(Path(link["path"]), sub)
        if sub.problems:
            rep.add("student", "corrupt", f"{where}: {'; '.join(sub.problems)}")
        else:
            rep.add("student", "ok", f"{where}: fingerprint matches, weights re-hashed")
    elif link["status"] == "ok":
        rep.add("student", "ok", f"{where}: fingerprint matches")
    elif link["status"] == "mismatch":
        rep.add("student", "mismatch", f"{where} is now {str(link['found'])[:16]}, the result "
                f"records {str(link['fingerprint'])[:16]}")
    else:
        rep.add("student", "not checked", f"{where}: {link['why']}")


def verify(path: str | Path) -> dict:
    """Recompute every checksum an artifact records; list corrupt, missing and extra files."""
    kind, p = locate(path)
    rep = _Report()
    if kind in ("raw-cache", "targets"):
        _verify_store(p, rep)
    elif kind == "projection":
        _verify_projection(p, rep)
    elif kind == "student":
        _verify_student(p, rep)
    else:
        _verify_transfer(p, rep)
    for t in sorted((p.parent if p.is_file() else p).glob("*.tmp")):
        rep.notes.append(f"{t.name}: temporary file of an interrupted run (never read; safe "
                         "to delete when no run is active)")
    return {"path": str(p.resolve()), "kind": kind, "ok": not rep.problems,
            "problems": rep.problems, "files": rep.files, "notes": rep.notes}
