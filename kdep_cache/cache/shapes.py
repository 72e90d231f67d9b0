"""The shape of each JSON record a stage reads: a manifest, a student sidecar, a transfer
result. Valid JSON of another shape (a list, a number where a list belongs, a key missing) is
refused with one line naming the file and the key, before any reader indexes into it.

Only what readers rely on is required; extra keys are allowed (later versions add fields).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ArtifactError

NUM = (int, float)
OPT_STR, OPT_INT, OPT_LIST, OPT_DICT = (str, type(None)), (int, type(None)), (
    list, type(None)), (dict, type(None))

SHARD = {"file": str, "sha256": str, "bytes": int, "content": str, "start": int, "stop": int}
SHARD_OPTIONAL = {"arrays": dict, "skipped": list}
MANIFEST = {"format": str, "format_version": int, "fingerprint": str, "settings": dict,
            "n_images": int, "views": int, "shards": [SHARD]}
MANIFEST_OPTIONAL = {"arrays": list, "skipped": list, "dim": int, "source_cache": str,
                     "cache_fingerprint": str, "projection_fingerprint": str}
SIDECAR = {"format": str, "student": str, "settings": dict, "fingerprint": str}
SIDECAR_OPTIONAL = {"format_version": int, "input": dict, "lineage": dict, "history": list,
                    "classes": OPT_LIST, "num_classes": OPT_INT, "feature_dim": OPT_INT,
                    "family": OPT_STR, "argv": OPT_LIST, "warnings": list}
INPUT_OPTIONAL = {"mean": list, "std": list, "image_size": OPT_INT}
RESULTS = {"format": str, "student": dict}
RESULTS_OPTIONAL = {"format_version": int, "settings_fingerprint": str, "summary": dict,
                    "seeds": list, "dataset": dict, "protocol": dict, "leakage": OPT_DICT}
STUDENT_LINK_OPTIONAL = {"kind": OPT_STR, "weights": OPT_STR, "weights_sha256": OPT_STR,
                         "fingerprint": OPT_STR, "lineage": OPT_DICT, "label": OPT_STR}


def _type_ok(value, want) -> bool:
    if isinstance(value, bool) and want is not bool and not (
            isinstance(want, tuple) and bool in want):
        return False  # JSON true is not a count
    return isinstance(value, want)


def _name(want) -> str:
    if isinstance(want, list):
        return "a list"
    kinds = want if isinstance(want, tuple) else (want,)
    return " or ".join({dict: "an object", list: "a list", str: "a string", int: "an integer",
                        float: "a number", type(None): "null"}.get(k, k.__name__) for k in kinds)


def check(doc, required: dict, optional: dict | None = None, where: str = "",
          path: str | Path = "") -> dict:
    """``doc`` itself when it has ``required`` keys (and any ``optional`` ones) of the given
    types; a list spec ``[SUB]`` is a list of objects shaped like ``SUB``."""
    what = f"{path}: not a kdep-cache record of the expected shape"
    if not isinstance(doc, dict):
        raise ArtifactError(f"{what}: {where or 'the file'} is {_kind(doc)}, not an object")
    for key, want in [*required.items(), *(optional or {}).items()]:
        if key not in doc:
            if key in required:
                raise ArtifactError(f"{what}: {where}{key!r} is missing")
            continue
        v = doc[key]
        if isinstance(want, list):
            if not isinstance(v, list):
                raise ArtifactError(f"{what}: {where}{key!r} is {_kind(v)}, not a list")
            for i, item in enumerate(v):
                check(item, want[0], SHARD_OPTIONAL if want[0] is SHARD else None,
                      f"{where}{key}[{i}].", path)
        elif not _type_ok(v, want):
            raise ArtifactError(f"{what}: {where}{key!r} is {_kind(v)}, not {_name(want)}")
    return doc


def _kind(v) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number", type(None): "null"}.get(type(v), type(v).__name__)


def manifest(doc, path) -> dict:
    return check(doc, MANIFEST, MANIFEST_OPTIONAL, "", path)


def sidecar(doc, path) -> dict:
    check(doc, SIDECAR, SIDECAR_OPTIONAL, "", path)
    if isinstance(doc.get("input"), dict):
        inp = check(doc["input"], {}, INPUT_OPTIONAL, "input.", path)
        for k in ("mean", "std"):
            if k in inp and not all(_type_ok(x, NUM) for x in inp[k]):
                raise ArtifactError(f"{path}: not a kdep-cache record of the expected shape: "
                                    f"input.{k!r} holds something other than numbers")
    return doc


def results(doc, path) -> dict:
    check(doc, RESULTS, RESULTS_OPTIONAL, "", path)
    check(doc["student"], {}, STUDENT_LINK_OPTIONAL, "student.", path)
    return doc
