"""What a reader recomputes from a store before it trusts it: the manifest's shape and its
fingerprint (from its settings and shard contents), and a shard's content digests (from its
arrays). The recipes are defined here once, for the writer (``manifest.finalize_store``),
the readers (``store.Store``) and ``verify``.

Every entry a current writer records is required: a manifest without a fingerprint, a shard
entry without its sha256 or content digest, or an array the store lists without its digest
is refused, not skipped. Stores from before per-array digests have none at all: their shards
are checked whole (sha256 of the file), which they do record.
"""

from __future__ import annotations

from pathlib import Path

import h5py

from ..errors import ArtifactError
from ..storage.digest import array_sha, arrays_sha
from ..storage.fsio import fingerprint, read_json
from . import shapes
from .schema import FORMAT_VERSION, MANIFEST, shard_name


def store_fingerprint(settings: dict, entries: list[dict]) -> str:
    """A store's fingerprint: its settings and every shard's content digest, in order."""
    return fingerprint({"settings": settings, "contents": [e["content"] for e in entries]})


def projection_fingerprint(attrs: dict, arrays: dict) -> str:
    """``projection.h5``'s fingerprint (fit-svd's recipe), recomputed from its attributes and
    its arrays (``{name: array}``)."""
    return fingerprint({"spec": attrs.get("spec"), "cache": attrs.get("cache"),
                        "fit_views": attrs.get("fit_views"), "n": attrs.get("fitted_samples"),
                        "arrays": {k: array_sha(a) for k, a in arrays.items()}})


def read_manifest(directory: Path, expect_format: str | None = None) -> dict:
    """``manifest.json`` of ``directory``, refused (one line) unless it has the expected shape,
    format and version, lists its own shard files in order, and its fingerprint is the one
    recomputed from its settings and shard digests."""
    path = Path(directory) / MANIFEST
    m = shapes.manifest(read_json(path), path)
    fix = f"run `kdep-cache verify {directory}`; then rerun the stage that wrote it"
    if expect_format is not None and m["format"] != expect_format:
        raise ArtifactError(f"{directory} holds {m['format']!r}, expected {expect_format!r}")
    if m["format_version"] != FORMAT_VERSION:
        raise ArtifactError(f"{directory} has format version {m['format_version']}, this "
                            f"kdep-cache reads version {FORMAT_VERSION}")
    for i, e in enumerate(m["shards"]):
        if e["file"] != shard_name(i):
            raise ArtifactError(f"{path}: shard slot {i} lists {e['file']!r}, not "
                                f"{shard_name(i)} (outside the store or out of order): {fix}")
    if store_fingerprint(m["settings"], m["shards"]) != m["fingerprint"]:
        raise ArtifactError(f"{path} does not match its own fingerprint (its settings or shard "
                            f"list were edited or damaged): {fix}")
    return m


def shard_digests(path: Path) -> tuple[str, dict[str, str]]:
    """``(content digest, {array: digest})`` recomputed from the arrays of shard ``path``."""
    try:
        with h5py.File(path, "r") as f:
            arrays = {name: f[name][()] for name in f.keys()}
    except (OSError, KeyError) as e:
        raise ArtifactError(f"{path} is not a readable kdep-cache shard: {e}") from None
    return arrays_sha(arrays), {k: array_sha(a) for k, a in arrays.items()}


def missing_digests(m: dict, entry: dict, names) -> list[str]:
    """Arrays of ``names`` that the store lists but ``entry`` records no digest of (an entry
    with no per-array digests at all is an older store: checked whole instead)."""
    if "arrays" not in entry:
        return []
    listed = set(m.get("arrays") or entry["arrays"])
    return [n for n in names if n in listed and n not in entry["arrays"]]
