"""``verify``: recompute every checksum an artifact records; list corrupt, missing, extra files.

Artifacts are found by :func:`kdep_cache.audit.info.locate` (the same kinds ``info`` reads).
"""

from __future__ import annotations

import math
from pathlib import Path

from ..cache import shapes
from ..cache.sidecar import predates_note, read_sidecar, student_fingerprint
from ..errors import ArtifactError
from ..names import CHECKPOINT, RESULTS, SIDECAR, STUDENT_FILE, STUDENT_SAFETENSORS
from ..storage.fsio import fingerprint, read_json
from .info import locate
from .lineage import transfer_student
from .verify_store import Report, verify_projection, verify_store


def _verify_student(p: Path, rep: Report) -> None:
    import torch

    from ..models.weights import load_state_dict_file
    from ..storage.digest import state_sha, weights_sha
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


def _verify_transfer(p: Path, rep: Report) -> None:
    """results.json: its settings fingerprint, its summary recomputed from the per-seed
    results, and the student it names (sidecar fingerprint or weights sha256)."""
    try:
        r = shapes.results(read_json(p / RESULTS), p / RESULTS)
    except ArtifactError as e:
        return rep.add(RESULTS, "corrupt", str(e))
    settings = {k: r.get(k) for k in ("student", "dataset", "protocol")}
    rep.same(RESULTS, fingerprint(settings), r.get("settings_fingerprint"),
             "settings do not match its settings_fingerprint",
             "settings fingerprint recomputed")
    seeds, bad = r.get("seeds") or [], []
    for k, agg in (r.get("summary") or {}).items():
        vals = [s.get(k) if isinstance(s, dict) else None for s in seeds]
        if not isinstance(agg, dict) or not all(isinstance(v, (int, float)) for v in
                                                [*vals, agg.get("mean", math.nan)]):
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
        sub = Report()
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
    rep = Report()
    if kind in ("raw-cache", "targets"):
        verify_store(p, rep)
    elif kind == "projection":
        verify_projection(p, rep)
    elif kind == "student":
        _verify_student(p, rep)
    else:
        _verify_transfer(p, rep)
    for t in sorted((p.parent if p.is_file() else p).glob("*.tmp")):
        rep.notes.append(f"{t.name}: temporary file of an interrupted run (never read; safe "
                         "to delete when no run is active)")
    return {"path": str(p.resolve()), "kind": kind, "ok": not rep.problems,
            "problems": rep.problems, "files": rep.files, "notes": rep.notes}
