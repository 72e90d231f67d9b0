"""Where an image's bytes come from, read once per use: its file, or a cache's pack.

A reader maps image id ``i`` to a :class:`Read`: the bytes as a
:class:`~kdep_cache.views.files.Blob` (decoded from memory: a file is opened once, never
twice to hash and then decode it), why it cannot be used, and the file's content identity.

- :class:`FolderReader`: the file under the image list's root. Its sha256 is computed unless
  ``known`` (a tensor shared with the consumer, one row per image) holds the file's
  (size, mtime_ns, inode) as the consumer recorded them after it checked that file's sha256:
  then the file's ``stat`` alone is compared (``sha`` None), so a run hashes each file once
  (issue 26.3). What a stat does not catch: content rewritten in place with the same size,
  mtime and inode (a tool that restores mtimes), on a filesystem whose mtime is coarse.
- :class:`PackReader`: the bytes a packed cache stores (``extract --pack``); no file is
  opened, integrity is the pack arrays' digests checked when their shard is opened.
- :class:`PackingReader`: extract with ``--pack``: the file read once, packed
  (:func:`kdep_cache.views.pack.pack_image`), and the PACKED bytes are what the views are
  rendered from, so the stored crop parameters refer to the packed image.
"""

from __future__ import annotations

import hashlib
import os
from typing import NamedTuple

import torch

from ..storage.digest import SHA_BYTES
from .files import Blob
from .images import BadImage
from .pack import packed_name

NO_SHA = bytes(SHA_BYTES)


class Ident(NamedTuple):
    """A file's content identity as read: size (-1 unreadable), raw sha256 (None when the
    stat matched a checked one and the file was not hashed again), and its stat triple."""

    size: int
    sha: bytes | None
    stat: tuple  # (size, mtime_ns, inode); () when not a file read


UNKNOWN = Ident(-1, NO_SHA, ())


class Read(NamedTuple):
    src: Blob | None        # None: not usable (``why``)
    why: str | None
    ident: Ident
    packed: object = None   # extract --pack: the views.pack.Packed record that goes into it


def stat3(st: os.stat_result) -> tuple:
    """(size, mtime_ns, inode) as int64s: an inode >= 2**63 (overlayfs xino, CIFS) wraps
    (it is only compared)."""
    ino = st.st_ino - (1 << 64) if st.st_ino >= 1 << 63 else st.st_ino
    return st.st_size, st.st_mtime_ns, ino


def shared_known(n: int) -> torch.Tensor:
    """The (n, 3) int64 table of checked files' stats, in shared memory (made before the
    loader workers start, so they see what the consumer records); -1 = not checked yet."""
    return torch.full((n, 3), -1, dtype=torch.int64).share_memory_()


class FolderReader:
    def __init__(self, images, known: torch.Tensor | None = None):
        self.images, self.known = images, known

    def __call__(self, i: int) -> Read:
        path = os.path.join(self.images.root, self.images.paths[i])
        why = self.images.problem(i)  # a FIFO, a device, a huge file: skipped unread (#23.3)
        if why is not None:
            return Read(None, why, UNKNOWN)
        try:
            with open(path, "rb") as f:
                st = stat3(os.fstat(f.fileno()))
                data = f.read()
        except FileNotFoundError:
            return Read(None, "file not found (moved, or a broken symlink)", UNKNOWN)
        except OSError as e:
            return Read(None, f"unreadable image: {e.strerror or e}", UNKNOWN)
        seen = self.known is not None and tuple(self.known[i].tolist()) == st
        sha = None if seen else hashlib.sha256(data).digest()
        return Read(Blob(data, self.images.paths[i]), None, Ident(len(data), sha, st))


class PackReader:
    """Image ``i``'s packed bytes from ``store`` (its pack arrays mapped before the workers
    fork, so they share the pages and never open HDF5)."""

    def __init__(self, images, store):
        self.images, self.store = images, store

    def __call__(self, i: int) -> Read:
        data = self.store.blob(i)
        if not len(data):
            return Read(None, "not in the pack (skipped when the cache was extracted)", UNKNOWN)
        return Read(Blob(data, packed_name(self.images.paths[i], data)), None, UNKNOWN)


class PackingReader:
    def __init__(self, images, spec, background):
        self.folder, self.spec, self.background = FolderReader(images), spec, background

    def __call__(self, i: int) -> Read:
        r = self.folder(i)
        if r.src is None:
            return r
        try:
            packed = self.spec.pack(r.src, self.background)
        except BadImage as e:
            return Read(None, str(e), r.ident)
        return Read(Blob(packed.data, packed.name), None, r.ident, packed)
