"""``extract --pack``: one shard's packed images gathered as they come from the loader, stored as
``pack`` (uint8, every image's bytes end to end) + ``pack_offsets`` ((n + 1,) int64), and the
totals the manifest, the summary and ``info`` report."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..cache.schema import shard_name
from ..cache.store import read_shard_attrs


class PackShard:
    """The packed bytes of images ``lo..hi`` of one shard (empty for a skipped image)."""

    def __init__(self, n: int):
        self.blobs: list[bytes] = [b""] * n
        self.kept = 0

    def add(self, local, packed: list, ok: list) -> None:
        """``packed``: the loader's :class:`~kdep_cache.views.pack.Packed` records."""
        for j, p, good in zip(local.tolist(), packed, ok):
            if good and p is not None:
                self.blobs[j] = p.data
                self.kept += p.kept

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        sizes = np.array([len(b) for b in self.blobs], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        data = np.frombuffer(b"".join(self.blobs), dtype=np.uint8) if offsets[-1] else \
            np.zeros(0, dtype=np.uint8)
        return data, offsets

    def stats(self) -> dict:
        sizes = [len(b) for b in self.blobs if b]
        return {"images": len(sizes), "bytes": int(sum(sizes)), "kept": int(self.kept)}


def pack_totals(out: Path, n_shards: int, spec: str) -> dict:
    """The manifest's ``pack`` record: the spec, and images / bytes / kept over all shards."""
    tot = {"spec": spec, "images": 0, "bytes": 0, "kept": 0}
    for s in range(n_shards):
        st = read_shard_attrs(out / shard_name(s)).get("pack_stats") or {}
        for k in ("images", "bytes", "kept"):
            tot[k] += int(st.get(k, 0))
    tot["bytes_per_image"] = round(tot["bytes"] / max(1, tot["images"]), 1)
    return tot


def pack_line(p: dict) -> str:
    """One line for the summary and ``info``: size in all and per image."""
    return (f"{p['spec']}: {p['bytes'] / 2**20:.1f} MiB for {p['images']} images "
            f"({p['bytes_per_image'] / 1024:.1f} KiB per image; {p['kept']} stored as they were)")
