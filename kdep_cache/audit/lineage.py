"""Lineage links for ``info``: images -> cache -> projection -> targets -> student -> transfer.

Each link carries the fingerprint recorded downstream, the path it was recorded at, and
whether it was checked: ``ok`` (the artifact at that path has that fingerprint), ``mismatch``
(it has another), ``not checked`` with the reason (no path recorded, nothing there any more,
a random init), or ``this`` (the artifact being described). A link is only ``ok`` when it was
compared; contents are re-hashed by ``verify``, not here.
"""

from __future__ import annotations

from pathlib import Path

from ..cache import shapes
from ..cache.schema import MANIFEST
from ..cache.sidecar import paths_fingerprint
from ..cache.store import read_shard_attrs
from ..errors import ArtifactError
from ..names import CONFIG, IMAGES, PROJECTION_FILE, SIDECAR
from ..storage.fsio import read_json, sha256_file


def h5_attrs(path: Path) -> dict:
    """The attributes of any kdep-cache HDF5 file (:func:`read_shard_attrs`, its message)."""
    return read_shard_attrs(path, "a kdep-cache HDF5 file", why=False)


def manifest(d: Path | None) -> dict | None:
    """The manifest of store ``d`` if it is readable and of a manifest's shape, else None."""
    try:
        m = read_json(d / MANIFEST) if d is not None and (d / MANIFEST).is_file() else None
        return shapes.manifest(m, d / MANIFEST) if m is not None else None
    except ArtifactError:
        return None


def images_fp(images_json: Path) -> str | None:
    try:
        return paths_fingerprint(read_json(images_json)["paths"])
    except (OSError, ArtifactError, KeyError, TypeError):
        return None


def proj_fp(path: Path | None) -> str | None:
    try:
        return h5_attrs(path).get("fingerprint") if path and path.is_file() else None
    except ArtifactError:
        return None


def node(stage: str, fp: str | None, path, found: str | None, this: bool = False,
         why: str | None = None, **kw) -> dict:
    """One link: the recorded fingerprint ``fp`` vs ``found`` at the recorded ``path``."""
    if this:
        status = "this"
    elif why is not None:
        status = "not checked"
    elif path is None:
        status, why = "not checked", "path not recorded"
    elif found is None:
        status, why = "not checked", "nothing readable at the recorded path"
    elif fp is None:
        status, why = "not checked", "no fingerprint recorded"
    else:
        status = "ok" if found == fp else "mismatch"
    return {"stage": stage, "fingerprint": fp,
            "path": None if path is None else str(Path(path).resolve()),
            "found": found, "status": status, "why": why, **kw}


def cache_chain(cache_dir, cache_fp: str | None, images: str | None = None,
                this: bool = False) -> list[dict]:
    """images -> cache, checked against the cache directory (if its path is known)."""
    d = Path(cache_dir) if cache_dir else None
    m = (manifest(d) if d else None) or {}
    imgs = d / IMAGES if d else None
    s = m.get("settings") or (read_json(d / CONFIG) if this and (d / CONFIG).is_file() else {})
    try:
        root = read_json(imgs).get("root") if imgs and imgs.is_file() else None
    except ArtifactError:
        root = None
    chain = [node("images", images or s.get("images"), root, images_fp(imgs) if imgs else None,
                  n_images=s.get("n_images"))]
    if cache_fp is not None or this:
        chain.append(node("cache", cache_fp, d, m.get("fingerprint"), this))
    return chain


def student_chain(lin: dict, argv: list | None) -> list[dict]:
    """images -> cache -> projection -> targets from a student's recorded ``lineage``."""
    if lin.get("images_file") or lin.get("cache_dir") or lin.get("cache"):
        cdir = lin.get("cache_dir") or (Path(lin["images_file"]).parent
                                        if lin.get("images_file") else None)
        chain = cache_chain(cdir, lin.get("cache"), lin.get("images"))
    else:  # no cache (supervised baseline): a folder of images
        chain = [node("images", lin.get("images"), lin.get("images_root"), None,
                      why="a plain image folder (no image list to compare)")]
    if lin.get("targets"):
        tdir = Path(lin["targets_dir"]) if lin.get("targets_dir") else None
        if tdir is None and argv and "--targets" in argv[:-1]:  # older sidecars: argv
            arg = Path(argv[argv.index("--targets") + 1])
            tdir = arg if arg.is_absolute() else None
        proj = tdir / PROJECTION_FILE if tdir else None
        chain.append(node("projection", lin.get("projection"), proj, proj_fp(proj)))
        chain.append(node("targets", lin["targets"], tdir,
                          (manifest(tdir) or {}).get("fingerprint") if tdir else None))
    return chain


def transfer_student(st: dict) -> dict:
    """The student link of a transfer result: a run (its sidecar fingerprint), a plain
    state_dict (its sha256), or a random init (nothing to check)."""
    w = Path(st["weights"]) if st.get("weights") else None
    if st.get("kind") == "random":
        n = node("student", None, None, None, why="random init (no weights)", kind="random")
        return {**n, "path": st.get("spec") or f"random:{st.get('arch')}"}
    if st.get("kind") == "run":
        side = w.parent / SIDECAR if w else None
        try:
            doc = read_json(side) if side and side.is_file() else None
        except ArtifactError:
            doc = None
        found = doc.get("fingerprint") if isinstance(doc, dict) else None
        return node("student", st.get("fingerprint"), w.parent if w else None, found, kind="run")
    return node("student", st.get("weights_sha256"), w,
                sha256_file(w) if w and w.is_file() else None, kind=st.get("kind"))
