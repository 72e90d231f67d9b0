"""Crash-safe file output: atomic writes, content hashes (the one-writer lock: :mod:`.locks`).

Every artifact is written under a temporary name, fsync'ed and renamed into place, so a
reader never sees a partial file under its final name. Disk-full and other write errors
remove the partial file and raise a one-line :class:`ArtifactError` naming the path.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

from ..errors import ArtifactError, os_error_line
from .locks import lock_holder_alive, rank_lock, writer_lock  # noqa: F401 (their old home)


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)


def _json_default(o):
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def fingerprint(obj: Any) -> str:
    """sha256 (hex, 16 chars shown to users) of the canonical JSON of ``obj``."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


def sha256_file(path: str | os.PathLike, bufsize: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(bufsize):
            h.update(chunk)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], need_bytes: int = 0) -> None:
    """Call ``write(tmp_path)``, fsync, then rename to ``path``. Clean up on any failure."""
    path = Path(path)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as e:
        # before unlinking: may look at the partial file's size
        full = _out_of_space(e, tmp) if isinstance(e, Exception) else None
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        if full == errno.EFBIG:
            raise ArtifactError(
                f"file size limit reached writing {path} (needs about {_mb(need_bytes)}, "
                f"limit {_fsize_limit()}); partial file removed, earlier complete files kept: "
                "raise the limit (ulimit -f) or use another filesystem and rerun to resume"
            ) from e
        if full is not None:
            free = shutil.disk_usage(path.parent).free
            raise ArtifactError(
                f"no space left writing {path} (needs about {_mb(need_bytes)}, {_mb(free)} free); "
                "partial file removed, earlier complete files kept: free space and rerun to resume"
            ) from e
        if isinstance(e, OSError):
            raise ArtifactError(f"could not write {path}: {e.strerror or e}") from e
        raise


def _mb(n: int) -> str:
    return f"{n / 2**10:.1f} KiB" if n < 2**20 else f"{n / 2**20:.1f} MiB"


_FULL_TEXT = {errno.ENOSPC: ("errno = 28", "No space left"), errno.EFBIG: ("errno = 27",
              "File too large"), errno.EDQUOT: ("errno = 122", "Disk quota exceeded")}


def _out_of_space(e: BaseException, tmp: Path) -> int | None:
    """errno (ENOSPC/EFBIG/EDQUOT) of a disk-full failure, also when a library wrapped or
    replaced the OSError (HDF5 re-raises on close, torch.save says only "iostream error")."""
    seen: set[int] = set()
    x: BaseException | None = e
    while x is not None and id(x) not in seen:
        seen.add(id(x))
        if isinstance(x, OSError) and x.errno in _FULL_TEXT:
            return x.errno
        for code, words in _FULL_TEXT.items():
            if any(w in str(x) for w in words):
                return code
        x = x.__cause__ or x.__context__
    try:
        import resource
        lim = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if lim != resource.RLIM_INFINITY and tmp.stat().st_size >= lim:
            return errno.EFBIG
        if shutil.disk_usage(tmp.parent).free < 2**20:
            return errno.ENOSPC
    except (ImportError, OSError):
        pass
    return None


def _fsize_limit() -> str:
    try:
        import resource
        lim = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    except ImportError:
        return "unknown"
    return "of the filesystem" if lim == resource.RLIM_INFINITY else f"{_mb(lim)} (ulimit -f)"


def write_json(path: str | os.PathLike, obj: Any) -> None:
    data = json.dumps(obj, indent=1, sort_keys=True, default=_json_default).encode()
    atomic_write(path, lambda p: p.write_bytes(data), len(data))


def read_json(path: str | os.PathLike) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{path} is missing: {Path(path).parent} is incomplete or not the "
                            "kind of folder this command reads") from None
    except (OSError, ValueError) as e:
        raise ArtifactError(f"{path} is unreadable or not valid JSON: {e}") from e


def remove_files(directory: str | os.PathLike, patterns) -> None:
    """Remove the files of ``directory`` that match any of ``patterns`` (glob, not recursive)."""
    for pattern in patterns:
        for f in Path(directory).glob(pattern):
            if f.is_file():
                f.unlink(missing_ok=True)


@contextmanager
def forget_on_failure(directory: Path, names, progress_glob: str, enabled: bool = True):
    """Settings files ``names`` that this block writes into ``directory`` are removed again
    if it fails before any ``progress_glob`` file exists (a run refused or out of memory before
    its first shard), so they do not lock ``directory`` to settings that never produced."""
    directory = Path(directory)
    fresh = enabled and not any((directory / n).exists() for n in names)
    try:
        yield
    except BaseException:
        if fresh and not any(directory.glob(progress_glob)):
            for n in names:
                (directory / n).unlink(missing_ok=True)
        raise


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append ``line`` (+ newline) to ``path``. On any OS error (disk full) the file is left
    as it was (cut back to its old size, or removed if this call created it) and a one-line
    :class:`ArtifactError` is raised."""
    path = Path(path)
    data = (line.rstrip("\n") + "\n").encode()
    try:
        old = path.stat().st_size
    except FileNotFoundError:
        old = None
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
    except OSError as e:
        try:
            if old is None:
                path.unlink(missing_ok=True)
            else:
                os.truncate(path, old)
        except OSError:
            pass
        raise ArtifactError(f"could not append to {path}: {os_error_line(e)}; the file is as "
                            "before") from e
