"""Image discovery: an :class:`ImageList` is the sorted list of relative paths under a root
(ids = positions), optional class labels from the first folder level, and a fingerprint; it
also records what the scan left out (files by extension, folders it could not list or did
not follow). Decoding one image is :mod:`.decode` (``load_rgb``, ``BadImage``: re-exported).
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from .decode import MAX_PIXELS, BadImage, load_rgb  # noqa: F401  (re-exported)
from .files import (  # noqa: F401  (file_problem, composited: re-exported)
    NOT_UTF8,
    composited,
    count_composited,
    file_problem,
    printable,
    utf8,
)
from .svg import SVG_EXTENSIONS, SVG_HINT, svg_supported

log = logging.getLogger(__name__)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")


@dataclass
class ImageList:
    root: str
    paths: list[str]
    labels: list[int] = field(default_factory=list)  # -1 where unlabeled
    classes: list[str] = field(default_factory=list)
    ignored: dict = field(default_factory=dict)        # extension -> files left out
    ignored_files: list = field(default_factory=list)  # their relative paths
    skipped_dirs: list = field(default_factory=list)   # {"path", "reason"}: not listed
    skipped_files: list = field(default_factory=list)  # {"path", "reason"}: image names not used
    max_bytes: int | None = None  # files above are skipped unread (extract --max-file-mb)

    def problem(self, i: int) -> str | None:
        """Why image ``i`` must not be opened (not a regular file, too large), or None."""
        return file_problem(os.path.join(self.root, self.paths[i]), self.max_bytes)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256("\n".join(self.paths).encode()).hexdigest()

    def to_json(self) -> dict:
        return {"root": self.root, "paths": self.paths, "labels": self.labels,
                "classes": self.classes, "fingerprint": self.fingerprint,
                "ignored": self.ignored, "ignored_files": self.ignored_files,
                "skipped_dirs": self.skipped_dirs, "skipped_files": self.skipped_files}

    @classmethod
    def from_json(cls, d: dict, root: str | None = None) -> "ImageList":
        return cls(root or d["root"], list(d["paths"]), list(d["labels"]), list(d["classes"]),
                   dict(d.get("ignored") or {}), list(d.get("ignored_files") or []),
                   list(d.get("skipped_dirs") or []), list(d.get("skipped_files") or []))

    def scan_record(self) -> dict:
        """What the scan left out, for a summary and a manifest (counts, not every path)."""
        rec = {"ignored": dict(sorted(self.ignored.items(), key=lambda kv: (-kv[1], kv[0]))),
               "ignored_total": sum(self.ignored.values()),
               "skipped_dirs": self.skipped_dirs, "skipped_files": self.skipped_files}
        if self.ignored.get(".svg"):
            rec["note"] = f"{self.ignored['.svg']} SVG files ignored: {SVG_HINT}"
        return rec

    def scan_summary(self) -> str:
        """One line: ``9000 ignored (.txt 5000, .wav 4000); 1 folder unlistable``."""
        parts = []
        if self.ignored:
            by = ", ".join(f"{e} {n}" for e, n in self.scan_record()["ignored"].items())
            parts.append(f"{sum(self.ignored.values())} files ignored ({by}; -v lists them)")
        if self.skipped_dirs:
            parts.append(f"{len(self.skipped_dirs)} folders not scanned (e.g. "
                         f"{self.skipped_dirs[0]['path']}: {self.skipped_dirs[0]['reason']})")
        if self.skipped_files:
            parts.append(f"{len(self.skipped_files)} image files not used (e.g. "
                         f"{self.skipped_files[0]['path']}: {self.skipped_files[0]['reason']})")
        if self.ignored.get(".svg"):
            parts.append(f"SVG: {SVG_HINT}")
        return "; ".join(parts) or "none"


def image_extensions() -> tuple[str, ...]:
    return IMAGE_EXTENSIONS + (SVG_EXTENSIONS if svg_supported() else ())


def _ext(name: str) -> str:
    if name.startswith("."):
        return "(hidden)"
    ext = os.path.splitext(name)[1].lower()
    return ext or "(no extension)"


def scan_images(root: str | os.PathLike, file_list: str | os.PathLike | None = None,
                fraction: float | None = None, seed: int = 0) -> ImageList:
    """List images under ``root`` (sorted relative POSIX paths, recursive, no symlinked dirs)."""
    rootp = Path(root)
    if not rootp.is_dir():
        raise InputError(f"image folder {root} does not exist or is not a directory")
    if file_list is not None:
        try:
            lines = Path(file_list).read_text().splitlines()
        except OSError as e:
            raise InputError(f"cannot read --file-list {file_list}: {e.strerror}") from None
        except UnicodeDecodeError as e:
            raise InputError(f"--file-list {file_list} is not UTF-8 text ({e.reason} at byte "
                             f"{e.start})") from None
        paths = sorted({ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")})
        bad = [p for p in paths if os.path.isabs(p) or ".." in Path(p).parts]
        if bad:
            raise InputError(f"--file-list must hold paths relative to {root}; got {bad[0]!r}")
        missing = [p for p in paths if not (rootp / p).exists()]
        if missing:
            raise InputError(f"{len(missing)} files of --file-list are not under {root}, "
                             f"e.g. {missing[:3]}")
        report: tuple = ({}, [], [], [])
    else:
        paths, report = _walk(rootp)
    if not paths:
        raise InputError(f"no images ({', '.join(image_extensions())}) found under {root}"
                         + (f"; {ImageList('', [], [], [], *report).scan_summary()}"
                            if any(report) else ""))
    labels, classes = class_labels(paths)
    il = ImageList(str(rootp.resolve()), paths, labels, classes, *report)
    if any(report):
        log.info("scan of %s: %d images; %s", root, len(paths), il.scan_summary())
    if fraction is not None:
        il = class_balanced_subset(il, fraction, seed)
    return il


def class_labels(paths: list[str]) -> tuple[list[int], list[str]]:
    """``(labels, classes)`` of sorted relative paths: class = first folder level; files at
    the top level stay unlabeled (-1). A function of the paths, so the image-list fingerprint
    covers them (readers recompute them: :mod:`kdep_cache.cache.sidecar`)."""
    classes = sorted({p.split("/")[0] for p in paths if "/" in p})
    cidx = {c: i for i, c in enumerate(classes)}
    return [cidx[p.split("/")[0]] if "/" in p else -1 for p in paths], classes


def _walk(rootp: Path) -> tuple[list[str], tuple[dict, list, list, list]]:
    """Image paths under ``rootp``, and what was left out: ``({ext: n}, [paths],
    [{"path", "reason"}], [{"path", "reason"}])`` for files by extension, folders not
    listed and image files not used (a name that is not UTF-8 cannot be recorded in JSON)."""
    exts, paths, ignored, ignored_files, skipped_dirs = image_extensions(), [], {}, [], []
    skipped_files: list = []

    def unlistable(err: OSError) -> None:
        rel = (printable(Path(err.filename).relative_to(rootp).as_posix()) if err.filename
               else "?")
        skipped_dirs.append({"path": rel, "reason": f"cannot list: {err.strerror or err}"})
        log.warning("cannot list folder %s: %s", err.filename, err.strerror or err)

    for dirpath, dirnames, filenames in os.walk(rootp, onerror=unlistable, followlinks=False):
        rel = Path(dirpath).relative_to(rootp)
        for d in sorted(dirnames):
            if os.path.islink(os.path.join(dirpath, d)):  # not followed (loops, escapes)
                skipped_dirs.append({"path": printable((rel / d).as_posix()),
                                     "reason": "symlinked folder, not followed"})
            elif not utf8(d):
                skipped_dirs.append({"path": printable((rel / d).as_posix()),
                                     "reason": f"folder {NOT_UTF8}"})
                log.warning("not scanning folder %s: %s", printable(d), NOT_UTF8)
        dirnames[:] = sorted(d for d in dirnames if utf8(d))
        for fn in filenames:
            relp = (rel / fn).as_posix()
            if not utf8(fn):
                if fn.lower().endswith(exts):
                    skipped_files.append({"path": printable(relp), "reason": NOT_UTF8})
                    log.warning("skipping %s: %s", printable(relp), NOT_UTF8)
                else:
                    ignored[printable(_ext(fn))] = ignored.get(printable(_ext(fn)), 0) + 1
                    ignored_files.append(printable(relp))
            elif fn.lower().endswith(exts) and not fn.startswith("."):
                paths.append(relp)
            else:
                ignored[_ext(fn)] = ignored.get(_ext(fn), 0) + 1
                ignored_files.append(relp)
                log.debug("ignored (not an image extension): %s", relp)
    return sorted(paths), (ignored, sorted(ignored_files), skipped_dirs,
                           sorted(skipped_files, key=lambda x: x["path"]))


def class_balanced_subset(il: ImageList, fraction: float, seed: int) -> ImageList:
    """Take ``round(fraction * n_c)`` images of every class c (or of all images), seeded."""
    if not 0 < fraction <= 1:
        raise InputError(f"--fraction must be in (0, 1], got {fraction}")
    labels = np.asarray(il.labels)
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = max(1, int(round(fraction * len(idx))))
        keep.extend(rng.choice(idx, size=k, replace=False).tolist())
    keep.sort()
    return ImageList(il.root, [il.paths[i] for i in keep], [il.labels[i] for i in keep],
                     il.classes, il.ignored, il.ignored_files, il.skipped_dirs, il.skipped_files,
                     il.max_bytes)
