"""Resume bookkeeping and the manifest: settings check on start, manifest written last."""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import ArtifactError, InputError
from ..storage.fsio import read_json, sha256_file, write_json
from . import shapes
from .schema import CONFIG, FORMAT_VERSION, IMAGES, MANIFEST, now_iso, producer_info, shard_name
from .store import read_shard_attrs
from .trust import shard_digests, store_fingerprint

__all__ = ["CONFIG", "IMAGES", "diff_settings", "finalize_store", "load_or_init_config",
           "record_shard", "shard_done", "shard_entry"]
log = logging.getLogger(__name__)


def diff_settings(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Human-readable list of keys whose values differ (nested dicts flattened)."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += diff_settings(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} (existing) vs {b!r} (now)")
    return out


def load_or_init_config(out: Path, settings: dict, images_json: dict | None = None) -> None:
    """First run: record settings. Later runs: refuse if any setting differs."""
    cfg_path = out / CONFIG
    if cfg_path.is_file():
        old = read_json(cfg_path)
        if not isinstance(old, dict):
            raise ArtifactError(f"{cfg_path} is not a settings record (valid JSON of another "
                                "shape): use a new --out, or restore the file")
        diffs = diff_settings(old, settings)
        if diffs:
            hint = ("; a cache made before --pack resumes with --pack none"
                    if any(d.startswith("pack: None (existing)") for d in diffs) else "")
            raise InputError(f"{out} was started with other settings; use a new --out or the "
                             f"same options. Differences: {'; '.join(diffs[:5])}{hint}")
        return
    leftovers = [p.name for p in out.glob("shard-*.h5")] + (
        [MANIFEST] if (out / MANIFEST).exists() else [])
    if leftovers:
        raise InputError(f"{out} holds {leftovers[0]} but no {CONFIG}: not a kdep-cache output "
                         "directory of this kind; use an empty --out")
    if images_json is not None:
        write_json(out / IMAGES, images_json)
    write_json(cfg_path, settings)


def shard_entry(out: Path, index: int) -> dict:
    """Manifest entry of a complete shard (from its sidecar, else recomputed)."""
    path = out / shard_name(index)
    side = path.with_suffix(".json")
    if side.is_file():
        entry = read_json(side)
        if _entry_shaped(entry, side) and entry["bytes"] == path.stat().st_size:
            return entry  # (any other shape: recomputed below)
    attrs = read_shard_attrs(path)
    content, arrays = shard_digests(path)
    entry = {"file": path.name, "sha256": sha256_file(path), "bytes": path.stat().st_size,
             "content": content, "arrays": arrays,
             "start": attrs["start"], "stop": attrs["stop"], "skipped": attrs.get("skipped", [])}
    write_json(side, entry)
    return entry


def _entry_shaped(entry, side: Path) -> bool:
    try:
        shapes.check(entry, shapes.SHARD, shapes.SHARD_OPTIONAL, "", side)
        return True
    except ArtifactError:
        return False


def shard_done(out: Path, index: int, start: int, stop: int) -> bool:
    """Is shard ``index`` (images ``start..stop``) complete and intact? A shard that is damaged
    (truncated, unreadable, attributes not JSON, other range, checksum unlike its sidecar) is
    removed with its sidecar and reported, so the rerun redoes it instead of failing."""
    path = out / shard_name(index)
    if not path.is_file():
        return False
    side = path.with_suffix(".json")
    try:
        entry = read_json(side) if side.is_file() else None
        if entry is not None and not isinstance(entry, dict):
            raise ArtifactError("its sidecar is valid JSON of another shape")
        if entry is not None and (entry.get("bytes") != path.stat().st_size
                                  or entry.get("sha256") != sha256_file(path)):
            raise ArtifactError("its checksum differs from its sidecar")
        if entry is None:  # killed between the shard and its sidecar: recompute (reads it all)
            entry = shard_entry(out, index)
        if (entry.get("start"), entry.get("stop")) != (start, stop):
            raise ArtifactError(f"it holds images {entry.get('start')}..{entry.get('stop')}, "
                                f"not {start}..{stop}")
        return True
    except (ArtifactError, OSError, KeyError, TypeError, ValueError) as e:
        log.warning("redoing %s: damaged or incomplete (%s)", path, e)
        path.unlink(missing_ok=True)
        side.unlink(missing_ok=True)
        return False


def record_shard(out: Path, index: int, entry: dict, start: int, stop: int,
                 skipped: list | None = None) -> None:
    write_json((out / shard_name(index)).with_suffix(".json"),
               {**entry, "start": start, "stop": stop, "skipped": skipped or []})


def finalize_store(out: Path, settings: dict, n_shards: int, arrays: list[str],
                   extra: dict | None = None) -> dict | None:
    """Write ``manifest.json`` if every shard is present; return it (or None if not yet)."""
    if not all((out / shard_name(s)).is_file() for s in range(n_shards)):
        return None
    entries = [shard_entry(out, s) for s in range(n_shards)]
    for s, e in enumerate(entries):
        if s and e["start"] != entries[s - 1]["stop"]:
            raise ArtifactError(f"{out}: shard {s} does not continue shard {s - 1}")
    skipped = [x for e in entries for x in e.get("skipped", [])]
    fp = store_fingerprint(settings, entries)
    manifest = {"format": settings["format"], "format_version": FORMAT_VERSION,
                "fingerprint": fp, "settings": settings, "arrays": arrays,
                "n_images": settings["n_images"], "views": settings["views"],
                "shards": entries, "skipped": skipped, "producer": producer_info(),
                "created_at": now_iso(), **(extra or {})}
    write_json(out / MANIFEST, manifest)
    return manifest
