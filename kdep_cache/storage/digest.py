"""Content digests, defined once: of arrays, of state dicts / checkpoints, of image files.

Every digest is a sha256 hex string. The array recipes are the ones written into existing
caches (changing them would change every recorded fingerprint):

- :func:`array_sha` — the raw bytes of one C-contiguous array (projection arrays);
- :func:`arrays_sha` — name + bytes of each array, names sorted (shard ``content``);
- :func:`weights_sha` — name + float32 bytes of each tensor (student weights fingerprint);
- :func:`state_sha` — any nest of dicts / lists / tensors / scalars (checkpoint.pt);
- :func:`file_identity` — size and sha256 of an image file's bytes (images are identified
  by content, not by path).
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

SHA_BYTES = 32  # raw sha256 length, as stored per image in the cache ("file_sha256")


def array_sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def arrays_sha(arrays: dict) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        h.update(name.encode())
        h.update(np.ascontiguousarray(arrays[name]).tobytes())
    return h.hexdigest()


def weights_sha(state_dict: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(state_dict):
        h.update(k.encode())
        h.update(state_dict[k].detach().cpu().float().numpy().tobytes())
    return h.hexdigest()


def state_sha(obj) -> str:
    """Digest of a nest of dicts (keys sorted by their repr), lists/tuples, tensors, numpy
    arrays and plain scalars; types, dtypes and shapes are part of it."""
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def _feed(h, obj) -> None:
    import torch
    if isinstance(obj, dict):
        h.update(b"{%d" % len(obj))
        for k in sorted(obj, key=repr):
            h.update(repr(k).encode())
            _feed(h, obj[k])
        h.update(b"}")
    elif isinstance(obj, (list, tuple)):
        h.update(b"[%d" % len(obj))
        for v in obj:
            _feed(h, v)
        h.update(b"]")
    elif isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, np.ndarray):
        h.update(f"A{obj.dtype}{obj.shape}".encode())
        h.update(np.ascontiguousarray(obj).tobytes())
    else:
        h.update(f"{type(obj).__name__}:{obj!r}".encode())


def file_identity(path: str | os.PathLike) -> tuple[int, bytes]:
    """``(size, raw sha256)`` of a file's bytes; ``(-1, zeros)`` if it cannot be read."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return -1, bytes(SHA_BYTES)
    return len(data), hashlib.sha256(data).digest()
