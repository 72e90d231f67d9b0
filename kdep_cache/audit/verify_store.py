"""``verify`` of a store (raw cache or targets) and of ``projection.h5``: every checksum and
digest the manifest records, recomputed from the files; and the :class:`Report` record."""

from __future__ import annotations

from pathlib import Path

import h5py

from ..cache import shapes
from ..cache.schema import MANIFEST, RAW, TARGETS, shard_name
from ..cache.sidecar import image_list_problem
from ..cache.trust import projection_fingerprint, shard_digests, store_fingerprint
from ..errors import ArtifactError
from ..names import CONFIG, IMAGES, PROJECTION_FILE
from ..storage.fsio import read_json, sha256_file
from .info import PROJ_ARRAYS
from .lineage import h5_attrs


class Report:
    """Per-file results of :func:`verify`; problems are the one-line failures."""

    # an extra file is listed but does not fail: no reader opens it (README, issue 24.10)
    FAIL = ("corrupt", "missing", "mismatch", "incomplete")

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


def verify_projection(p: Path, rep: Report, expect: str | None = None) -> None:
    """Recompute the projection fingerprint from its arrays (fit-svd's own recipe)."""
    try:
        a = h5_attrs(p)
        with h5py.File(p, "r") as f:
            fp = projection_fingerprint(a, {k: f[k][()] for k in PROJ_ARRAYS})
    except (ArtifactError, OSError, KeyError) as e:
        return rep.add(p.name, "corrupt", f"unreadable: {e}")
    if fp == a.get("fingerprint") and expect not in (None, fp):
        return rep.add(p.name, "mismatch", f"{fp[:16]} is not the manifest's {expect[:16]}")
    rep.same(p.name, fp, a.get("fingerprint"), "arrays do not match its recorded fingerprint",
             "fingerprint recomputed from its arrays")


def verify_store(p: Path, rep: Report) -> None:
    if not (p / MANIFEST).is_file():
        return _verify_unfinished(p, rep)
    try:
        m = shapes.manifest(read_json(p / MANIFEST), p / MANIFEST)
    except ArtifactError as e:
        return rep.add(MANIFEST, "corrupt", str(e))
    listed = set()
    for i, e in enumerate(m["shards"]):
        if e["file"] != shard_name(i):  # never follow a listed path out of the store
            rep.add(MANIFEST, "corrupt", f"shard slot {i} lists {e['file']!r}, not "
                    f"{shard_name(i)} (outside the store or out of order; not followed)")
            continue
        listed.add(e["file"])
        _verify_shard(p / e["file"], e, rep)
    for f in sorted(p.glob("shard-*.h5")) + sorted(p.glob("shard-*.json")):
        if f.name not in listed and f.with_suffix(".h5").name not in listed:
            rep.add(f.name, "extra", "a shard file that is not in the manifest (never read)")
    known = listed | {Path(x).with_suffix(".json").name for x in listed} | {
        MANIFEST, CONFIG, IMAGES, PROJECTION_FILE} | {
        f"projection-{k}.h5" for k in m.get("layers") or {}}  # fit-svd's per-layer ones
    for f in sorted(p.iterdir()):
        if (f.name not in known and not f.name.startswith((".lock", "shard-"))
                and f.suffix != ".tmp"):
            rep.add(f.name, "extra", f"not part of this {m['format'].split('/')[-1]} store "
                    "(never read)")
    rep.same(MANIFEST, store_fingerprint(m["settings"], m["shards"]), m["fingerprint"],
             "fingerprint does not match its own contents", "fingerprint recomputed")
    img = m["settings"].get("images", "")
    if m["format"] == RAW and isinstance(img, str) and len(img) == 64:  # (synthetic: none)
        if not (p / IMAGES).is_file():
            rep.add(IMAGES, "missing", "the image list of this cache")
        else:
            try:
                why = image_list_problem(read_json(p / IMAGES), img)
            except ArtifactError as e:
                why = str(e)
            rep.add(IMAGES, "corrupt" if why else "ok", why or "paths match the manifest's "
                    "image fingerprint; labels and classes recomputed from them")
    if m["format"] == TARGETS:
        proj = p / PROJECTION_FILE
        if proj.is_file():
            verify_projection(proj, rep, m.get("projection_fingerprint"))
        else:
            rep.add(proj.name, "missing")
        for layer, rec in (m.get("layers") or {}).items():  # multi-layer targets (issue 27)
            lp = p / f"projection-{layer}.h5"
            if lp.is_file():
                verify_projection(lp, rep, rec.get("projection"))
            else:
                rep.add(lp.name, "missing")


def _verify_shard(f: Path, e: dict, rep: Report) -> None:
    """A listed shard: size, sha256, and the content digests the fingerprint covers."""
    if not f.is_file():
        return rep.add(f.name, "missing")
    if f.stat().st_size != e["bytes"]:
        return rep.add(f.name, "corrupt", f"{f.stat().st_size} bytes, manifest says {e['bytes']}")
    got = sha256_file(f)
    if got != e["sha256"]:
        return rep.add(f.name, "corrupt", f"sha256 {got[:16]} != manifest {e['sha256'][:16]}")
    try:
        content, arrays = shard_digests(f)
    except ArtifactError as x:
        return rep.add(f.name, "corrupt", str(x))
    rec = e.get("arrays", arrays)
    bad = sorted(k for k in set(arrays) | set(rec) if arrays.get(k) != rec.get(k))
    if content != e["content"] or bad:
        return rep.add(f.name, "corrupt", "its arrays are not the digests the manifest records ("
                       + (", ".join(bad) if bad else "content") + ")")
    rep.add(f.name, "ok", "sha256 and content digests recomputed")


def _verify_unfinished(p: Path, rep: Report) -> None:
    rep.add(MANIFEST, "incomplete", "the run did not finish; rerun the same command to resume")
    for f in sorted(p.glob("shard-*.h5")):  # finished shards, against their sidecars
        side = f.with_suffix(".json")
        try:
            doc = read_json(side) if side.is_file() else None
        except ArtifactError:
            doc = None
        rec = doc.get("sha256") if isinstance(doc, dict) else None
        if rec is None:
            rep.add(f.name, "unverified", "no checksum recorded")
        else:
            rep.same(f.name, sha256_file(f), rec, "sha256 differs from its sidecar")
