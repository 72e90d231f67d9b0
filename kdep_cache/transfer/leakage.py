"""Pre-training leakage: which downstream test images a student was pre-trained on.

Compared by content, not by path: a copy of a pre-training image under another folder or name
is caught. A cache records every image's size and sha256 in its ``images.json`` (written when
the extract completes); a downstream test image whose size matches a recorded one is hashed
and looked up. Where nothing is recorded (an older cache, or a student trained on a whole
folder without a cache) the pre-training files are stat'ed and only those whose size equals a
test image's size are hashed. Identical paths always count.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from ..storage.digest import file_identity
from ..storage.fsio import read_json
from ..views.images import scan_images

log = logging.getLogger(__name__)
METHOD = "sha256"  # recorded in results.json's leakage block


@dataclass
class Pretraining:
    """The images a student was pre-trained on, as its lineage names them."""

    paths: list[str]                    # absolute, normalised
    sizes: list[int] | None = None      # recorded per image (a complete cache's images.json)
    sha256: list[str] | None = None     # hex, recorded alongside


def _abs(root: str, rel: list[str]) -> list[str]:
    real_root = os.path.realpath(root)
    out = []
    for p in rel:
        f = os.path.join(real_root, p)
        out.append(os.path.realpath(f) if os.path.islink(f) else os.path.normpath(f))
    return out


def pretraining_images(lineage: dict | None) -> Pretraining | None:
    """The pre-training images named by a student's lineage (None if it names none)."""
    lineage = lineage or {}
    root, listing = lineage.get("images_root"), lineage.get("images_file")
    doc: dict = {}
    if listing and os.path.isfile(listing):
        doc = read_json(listing)
        doc = doc if isinstance(doc, dict) else {}  # another shape: no list to compare
        rel, root = doc.get("paths"), root or doc.get("root")
    elif listing:
        log.warning("cannot check leakage: the student's image list %s is gone", listing)
        return None
    elif root and os.path.isdir(root):  # trained on a whole folder (e.g. the supervised baseline)
        rel = scan_images(root).paths
    else:
        rel = None
    if not rel or not root:
        return None
    sizes, shas = doc.get("sizes"), doc.get("sha256")
    ok = (isinstance(sizes, list) and isinstance(shas, list) and len(sizes) == len(rel)
          == len(shas))
    return Pretraining(_abs(root, rel), sizes if ok else None, shas if ok else None)


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return -1


def _sha(path: str) -> str | None:
    size, sha = file_identity(path)
    return sha.hex() if size >= 0 else None


def leaked(lineage: dict | None, test_files: list[str]) -> tuple[bool, list[str]]:
    """(checked, downstream test images whose content is also a pre-training image's)."""
    pre = pretraining_images(lineage)
    if pre is None:
        return False, []
    by_path = set(pre.paths)
    test_sizes = {f: _size(f) for f in test_files}
    if pre.sha256 is not None:
        pre_digests = {(int(s), h) for s, h in zip(pre.sizes, pre.sha256)
                       if isinstance(h, str) and int(s) >= 0}
    else:  # nothing recorded: hash only the pre-training files of a test image's size
        wanted = set(test_sizes.values()) - {-1}
        pre_digests = {(s, _sha(p)) for p in pre.paths if (s := _size(p)) in wanted}
    sizes = {s for s, h in pre_digests if h is not None}
    hit = []
    for f, s in test_sizes.items():
        if os.path.realpath(f) in by_path or (s in sizes and (s, _sha(f)) in pre_digests):
            hit.append(f)
    return True, sorted(hit)
