"""Write one shard atomically; open a complete store and read rows through memory maps."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import h5py
import numpy as np

from ..errors import ArtifactError
from ..storage.digest import array_sha, arrays_sha
from ..storage.fsio import atomic_write, canonical_json, sha256_file
from .schema import ARRAY_ATTR, MANIFEST, PACK, PACK_OFFSETS, RAW, TARGETS, shard_name
from .trust import missing_digests, read_manifest, shard_digests


def write_shard(path: Path, attrs: dict, arrays: dict[str, np.ndarray]) -> dict:
    """Write ``arrays`` (contiguous, uncompressed) + JSON ``attrs``; return its manifest entry."""
    # build the file image in memory, then one plain write: HDF5 that fails to flush on a full
    # disk cannot be closed and crashes the interpreter at exit (segfault); and the size the
    # disk-full message names is then the real one
    buf = io.BytesIO()
    with h5py.File(buf, "w", libver="latest") as f:
        f.attrs[ARRAY_ATTR] = canonical_json(attrs)
        for name, arr in arrays.items():
            f.create_dataset(name, data=np.ascontiguousarray(arr), track_times=False)
    data = buf.getbuffer()
    atomic_write(path, lambda tmp: tmp.write_bytes(data), len(data))
    return {"file": path.name, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
            "content": arrays_sha(arrays), "arrays": {k: array_sha(a) for k, a in arrays.items()}}


def read_shard_attrs(path: Path, what: str = "a readable kdep-cache shard",
                     why: bool = True) -> dict:
    """The JSON attributes of a kdep-cache HDF5 file (a shard, a projection); an unreadable
    one: ``{path} is not {what}`` (``: {why}`` appended when ``why``)."""
    try:
        with h5py.File(path, "r") as f:
            return json.loads(f.attrs[ARRAY_ATTR])
    except (OSError, KeyError, ValueError, TypeError) as e:  # TypeError: attribute not a string
        raise ArtifactError(f"{path} is not {what}" + (f": {e}" if why else "")) from None


def _stat(path: Path) -> tuple:
    try:
        st = path.stat()
    except OSError:
        return ()
    return st.st_size, st.st_mtime_ns, st.st_ino


class Store:
    """A complete sharded store (``manifest.json`` present, format checked on open).

    Reads are trusted only after checking: the first read of a shard recomputes its sha256
    and compares size, checksum, file name and image range with the manifest's entry for
    that slot (a changed, damaged or swapped shard is refused with one line).
    ``check=False`` is for ``verify``, which reports instead of refusing."""

    def __init__(self, directory: str | Path, expect_format: str, check: bool = True):
        self.dir = Path(directory)
        mpath = self.dir / MANIFEST
        if not self.dir.is_dir():
            raise ArtifactError(f"{self.dir} does not exist")
        if not mpath.is_file():
            stage = {RAW: "extract", TARGETS: "fit-svd"}.get(expect_format, "stage")
            raise ArtifactError(f"{self.dir} has no {MANIFEST}: it is incomplete (the {stage} "
                                f"that writes it is still running or did not finish); finish "
                                f"that `kdep-cache {stage}` (rerun it to resume), then retry")
        m = read_manifest(self.dir, expect_format)
        self.manifest = m
        self.starts = np.array([s["start"] for s in m["shards"]], dtype=np.int64)
        self._maps: dict[tuple[int, str], np.ndarray] = {}
        self._check = check
        self._checked: set[int] = set() if check else set(range(len(m["shards"])))
        self._checked_arrays: set[tuple[int, str]] = set()
        self._stat: dict[int, tuple] = {}  # shard -> (size, mtime, inode) when checked
        # None: a shard is checked whole (sha256 of the file) at its first read; a tuple of
        # array names: only those arrays (their recorded digests), for readers that use a
        # small part of a big shard (train-student reads params, not the teacher features)
        self.check_arrays: tuple[str, ...] | None = None

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    @property
    def n_images(self) -> int:
        return int(self.manifest["n_images"])

    @property
    def views(self) -> int:
        return int(self.manifest["views"])

    def has(self, name: str) -> bool:
        return name in self.manifest.get("arrays", [])

    def check_shard(self, shard: int, names: tuple[str, ...] | None = None) -> None:
        """Refuse shard ``shard`` unless it is byte-for-byte the file the manifest lists in
        that slot (reads the file once; later reads come from the page cache), or, with
        ``names`` and per-array digests in the manifest, unless those arrays are."""
        if shard in self._checked:
            return
        entry = self.manifest["shards"][shard]
        if names is not None and "arrays" in entry:
            return self._check_arrays(shard, entry, names)
        path = self.dir / entry["file"]
        fix = (f"run `kdep-cache verify {self.dir}`; then rerun the stage that wrote it into a "
               "new --out")
        if entry["file"] != shard_name(shard) or (shard and entry["start"] !=
                                                   self.manifest["shards"][shard - 1]["stop"]):
            raise ArtifactError(f"{self.dir / MANIFEST}: shard slot {shard} lists {entry['file']}"
                                f" for images {entry['start']}..{entry['stop']}, out of order: "
                                f"{fix}")
        if not path.is_file():
            raise ArtifactError(f"{path} is missing: {fix}")
        if path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
            raise ArtifactError(f"{path} does not match its checksum in the manifest (changed, "
                                f"damaged or swapped with another shard): {fix}")
        attrs = read_shard_attrs(path)
        if (attrs.get("start"), attrs.get("stop")) != (entry["start"], entry["stop"]):
            raise ArtifactError(f"{path} holds images {attrs.get('start')}..{attrs.get('stop')} "
                                f"but its slot is {entry['start']}..{entry['stop']}: {fix}")
        content, arrays = shard_digests(path)  # what the fingerprint claims, from the data
        if content != entry["content"] or any(arrays.get(k) != v for k, v in
                                              entry.get("arrays", {}).items()):
            raise ArtifactError(f"{path}: its arrays are not the content the manifest "
                                f"fingerprints (the manifest entry was edited): {fix}")
        self._checked.add(shard)
        self._stat[shard] = _stat(path)

    def _check_arrays(self, shard: int, entry: dict, names) -> None:
        path = self.dir / entry["file"]
        fix = f"run `kdep-cache verify {self.dir}`; then rerun the stage that wrote it"
        if missing := missing_digests(self.manifest, entry, names):
            raise ArtifactError(f"{self.dir / MANIFEST} records no digest of {missing[0]!r} in "
                                f"{entry['file']} (edited or damaged): refused: {fix}")
        todo = [n for n in names if (shard, n) not in self._checked_arrays and n in entry["arrays"]]
        if not todo:
            return
        if entry["file"] != shard_name(shard) or not path.is_file():
            raise ArtifactError(f"{path}: missing or out of its slot {shard}: {fix}")
        attrs = read_shard_attrs(path)
        if (attrs.get("start"), attrs.get("stop")) != (entry["start"], entry["stop"]):
            raise ArtifactError(f"{path} holds images {attrs.get('start')}..{attrs.get('stop')} "
                                f"but its slot is {entry['start']}..{entry['stop']}: {fix}")
        try:
            with h5py.File(path, "r") as f:
                got = {n: array_sha(f[n][()]) for n in todo}
        except (OSError, KeyError) as e:
            raise ArtifactError(f"{path} is not a readable kdep-cache shard: {e}: {fix}") from None
        for n in todo:
            if got[n] != entry["arrays"][n]:
                raise ArtifactError(f"{path}: array {n!r} does not match its checksum in the "
                                    f"manifest (changed, damaged or swapped): {fix}")
            self._checked_arrays.add((shard, n))
        self._stat[shard] = _stat(path)

    def check_all(self, names: tuple[str, ...] | None = None) -> None:
        for s in range(len(self.manifest["shards"])):
            self.check_shard(s, names)

    def recheck(self) -> None:
        """Before each epoch (train-student): a shard whose size, mtime or inode changed since
        it was checked is checked again in full (the memory maps read the file as it is now).
        A stat per shard: re-hashing every epoch would read all K views of the targets to
        train on one (measured in the issue 23.17 commit)."""
        if not self._check:
            return
        for s in sorted(self._stat):
            path = self.dir / self.manifest["shards"][s]["file"]
            if _stat(path) == self._stat[s]:
                continue
            names = tuple(sorted(n for t, n in self._checked_arrays if t == s))
            self._checked.discard(s)
            self._checked_arrays -= {(s, n) for n in names}
            self.check_shard(s, names or None)

    def _map(self, shard: int, name: str) -> np.ndarray:
        key = (shard, name)
        if key not in self._maps:
            self.check_shard(shard, None if self.check_arrays is None else
                             tuple({*self.check_arrays, name}))
            path = self.dir / self.manifest["shards"][shard]["file"]
            try:
                with h5py.File(path, "r") as f:
                    ds = f[name]
                    offset, shape, dtype = ds.id.get_offset(), ds.shape, ds.dtype
                    data = ds[()] if offset is None else None
            except (OSError, KeyError) as e:
                raise ArtifactError(f"cannot read {name!r} from {path}: {e}") from None
            self._maps[key] = data if data is not None else np.memmap(
                path, dtype=dtype, mode="r", offset=offset, shape=shape)
        return self._maps[key]

    def map_all(self, name: str) -> None:
        """Open every shard's ``name`` now (before DataLoader workers fork: they then share
        the memory maps and never open HDF5 themselves)."""
        for s in range(len(self.manifest["shards"])):
            self._map(s, name)

    def read(self, name: str, ids: np.ndarray, view: int | None = None) -> np.ndarray:
        """Rows ``ids`` of array ``name`` (of ``view`` for per-view arrays), in ``ids`` order."""
        ids = np.asarray(ids, dtype=np.int64)
        shard_of = np.searchsorted(self.starts, ids, side="right") - 1
        out = None
        for s in np.unique(shard_of):
            sel = np.flatnonzero(shard_of == s)
            arr = self._map(int(s), name)
            local = ids[sel] - self.starts[s]
            block = arr[view][local] if view is not None else arr[local]
            if out is None:
                out = np.empty((len(ids),) + block.shape[1:], dtype=block.dtype)
            out[sel] = block
        return out

    @property
    def packed(self) -> bool:
        """The cache stores its images (``extract --pack``): no stage needs the folder."""
        return self.has(PACK)

    def blob(self, i: int) -> bytes:
        """Image ``i``'s packed bytes (``b""``: not in the pack, i.e. skipped at extraction)."""
        s = int(np.searchsorted(self.starts, i, side="right") - 1)
        off, data = self._map(s, PACK_OFFSETS), self._map(s, PACK)
        j = int(i - self.starts[s])
        return bytes(data[int(off[j]):int(off[j + 1])])

    def iter_shards(self, name: str, view: int | None = None):
        """Yield ``(start, stop, array)`` for each shard (a whole view slice at a time)."""
        for s, entry in enumerate(self.manifest["shards"]):
            arr = self._map(s, name)
            yield entry["start"], entry["stop"], (arr[view] if view is not None else arr)

    def close(self) -> None:
        self._maps.clear()
