"""Typed errors. Library code raises these; the CLI turns them into one line + exit code."""


class KdepError(Exception):
    """A user-facing problem with inputs, options or artifacts (exit code 2)."""

    exit_code = 2


class InputError(KdepError):
    """Bad option values, missing paths, empty folders, unknown names."""


class ArtifactError(KdepError):
    """A cache / targets / checkpoint that is missing, incomplete, corrupt or mismatched."""


class LineageError(ArtifactError):
    """Artifacts that were not built from each other (fingerprints differ)."""


class LockedError(KdepError):
    """Another writer holds the output directory."""

    exit_code = 3


class TrainingError(KdepError):
    """Training could not continue (e.g. a non-finite loss)."""

    exit_code = 4


class FileSystemError(KdepError):
    """An operating-system error on a path: no space, permission, read-only, not a folder."""


_OS_HINTS = {  # errno -> what the user can do (one line with the path and the OS's words)
    "ENOSPC": "free space (or use another filesystem) and rerun to resume",
    "EDQUOT": "raise the quota or free space, and rerun to resume",
    "EFBIG": "raise the file size limit (ulimit -f) or use another filesystem",
    "EROFS": "read-only filesystem: choose an --out on a writable one",
    "EACCES": "choose a path you may write, or fix its permissions",
    "EPERM": "the system does not allow this here: choose another path",
    "ENOTDIR": "a part of this path is a file, not a folder",
    "EISDIR": "a folder stands where a file is expected",
    "EEXIST": "a file already stands there",
    "ENOENT": "the path or its folder does not exist, or its filesystem holds no new files (/proc)",
    "EMFILE": "too many open files: raise ulimit -n or use fewer --workers",
    "ENAMETOOLONG": "shorten the path",
    "EIO": "input/output error: check the disk",
}


def os_error_line(e: OSError) -> str:
    """One line for an OS error: what failed, on which path, and what to do."""
    import errno as _errno
    name = _errno.errorcode.get(e.errno or 0, "")
    what = e.strerror or str(e) or type(e).__name__
    path = " -> ".join(repr(str(p)) for p in (e.filename, e.filename2) if p is not None)
    hint = _OS_HINTS.get(name)
    return f"{what}{f': {path}' if path else ''}{f' ({hint})' if hint else ''}"
