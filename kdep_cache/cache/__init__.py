"""The on-disk contract between stages: sharded HDF5 arrays + a JSON manifest written last.

A *store* is a directory of ``shard-NNNNN.h5`` files, each holding a contiguous range of
image ids, with arrays laid out view-major ``(K, n, D)`` (one view of one shard is one
contiguous byte range, read through a memory map), plus ``manifest.json`` that lists every
shard with its sha256 and the store's lineage. No manifest = incomplete; readers refuse it.
"""

from .schema import FORMAT_VERSION, RAW, TARGETS, producer_info, shard_name
from .store import Store, write_shard

__all__ = ["FORMAT_VERSION", "RAW", "TARGETS", "Store", "producer_info", "shard_name",
           "write_shard"]
