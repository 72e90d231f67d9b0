"""One writer per output directory: a lock file recording pid and host.

A lock of a dead process on this host is stale and taken over; so is an empty or unreadable
one (a writer killed between creating the file and recording itself, or a full disk) once it
is :data:`LOCK_GRACE_S` old, with one warning line.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path

from ..errors import LockedError

log = logging.getLogger(__name__)
LOCK_GRACE_S = 3.0  # a writer records itself at once; an empty lock older than this is stale


@contextmanager
def writer_lock(directory: str | os.PathLike, name: str = ".lock"):
    """Hold ``directory/<name>`` for the duration; refuse at once if a live process holds it.

    The lock records pid and host; a lock of a dead process on this host is stale and taken over.
    """
    directory = Path(directory)
    created = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    lock = directory / name
    me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            other = _holder(lock, wait=True)
            if other is None:  # empty or unreadable past the grace time: no writer records it
                log.warning("taking over %s: empty or unreadable lock older than %gs (a writer "
                            "killed as it started, or a full disk)", lock, LOCK_GRACE_S)
                lock.unlink(missing_ok=True)
                continue
            if other["host"] == me["host"] and not _alive(other["pid"]):
                lock.unlink(missing_ok=True)  # stale: its process is gone
                continue
            raise LockedError(
                f"{directory} is being written by pid {other['pid']} on {other['host']}; "
                f"wait for it or remove {lock} if that process is gone"
            ) from None
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
        except OSError:  # disk full: leave no empty lock behind
            lock.unlink(missing_ok=True)
            raise
        for tmp in directory.glob("*.tmp"):  # partial files of killed writers: never complete
            pid = tmp.name.rsplit(".", 2)[-2]
            if not (pid.isdigit() and _alive(int(pid))):
                tmp.unlink(missing_ok=True)
        break
    else:
        raise LockedError(f"{directory}: {lock} keeps being taken by other writers; retry")
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
        if created and not any(directory.iterdir()):
            directory.rmdir()  # a run refused before writing anything leaves nothing behind


@contextmanager
def rank_lock(directory: str | os.PathLike, rank: int, world_size: int):
    """:func:`writer_lock` for one of ``world_size`` processes writing disjoint parts of one
    directory (extract ranks): one lock per rank; a writer of another world size (e.g. a
    one-process run beside rank 0 of 2) is refused at once."""
    mine = ".lock" if world_size == 1 else f".lock-rank{rank}-of-{world_size}"
    with writer_lock(directory, mine):
        for lock in Path(directory).glob(".lock*"):
            if lock.name == mine or lock.name.endswith(".tmp"):
                continue
            same_world = (world_size > 1 and lock.name.startswith(".lock-rank")
                          and lock.name.rsplit("-of-", 1)[-1] == str(world_size))
            if not same_world and lock_holder_alive(lock):
                raise LockedError(f"{directory} is being written by another extract "
                                  f"({lock.name}, another --world-size or a one-process run): "
                                  "wait for it, or use the same --world-size for every rank")
        yield


def lock_holder_alive(lock: Path) -> bool:
    """Is the process recorded in lock file ``lock`` alive (or on another host, unknowable)?"""
    other = _holder(lock, wait=True)
    if other is None:
        return False
    if other["host"] != socket.gethostname():
        return True
    return _alive(other["pid"])


def _holder(lock: Path, wait: bool = False) -> dict | None:
    """The writer recorded in ``lock`` (``pid`` int, ``host`` str), or None when the file is
    empty, unreadable or not such a record. A writer records itself right after creating the
    file, so with ``wait`` a young empty lock is read again once it is LOCK_GRACE_S old."""
    def read():
        try:
            d = json.loads(lock.read_text())
        except (OSError, ValueError):
            return None
        ok = (isinstance(d, dict) and isinstance(d.get("pid"), int)
              and not isinstance(d.get("pid"), bool) and isinstance(d.get("host"), str))
        return d if ok else None

    d = read()
    if d is None and wait:
        try:
            age = time.time() - lock.stat().st_mtime
        except OSError:
            return None
        if 0 <= age < LOCK_GRACE_S:
            time.sleep(LOCK_GRACE_S - age)
            d = read()
    return d


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # Linux: a killed process not yet reaped (a zombie, state Z) holds nothing any more
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
