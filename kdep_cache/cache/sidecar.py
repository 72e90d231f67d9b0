"""What a consumer recomputes before it trusts a record: a student's weights and sidecar
against its fingerprint, an image list against the cache's image fingerprint.

What these checks protect against is accidental damage and mix-ups: a flipped bit, a
truncated or swapped file, files copied from two runs, one field edited by hand. They do not
stop a forger who rewrites the data and every digest over it together (nothing is signed).

Versions: a ``student.json`` of format version 2 fingerprints every field a consumer acts on
(:data:`STUDENT_FIELDS`) with the weights, and a version-2 sidecar that lacks one of them is
refused. Version 1 (before this check) fingerprinted the settings and the weights only: it
still reads, and readers say in one line that its other fields are not covered.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ArtifactError
from ..names import IMAGES, SIDECAR, STUDENT_FILE
from ..storage.fsio import fingerprint, read_json
from ..views.images import ImageList, class_labels
from . import shapes
from .schema import STUDENT

SIDECAR_VERSION = 2
# what transfer and info act on besides the weights (the arch, how to normalise the input, at
# which size, the classes of a supervised run, the settings with the lineage fingerprints)
STUDENT_FIELDS = ("student", "family", "feature_dim", "num_classes", "classes", "input",
                  "settings")


def student_fingerprint(side: dict, weights_digest: str) -> str:
    """The fingerprint recipe of ``side``'s format version (``weights_digest``: weights_sha)."""
    if side.get("format_version", 1) < SIDECAR_VERSION:
        return fingerprint({"settings": side["settings"], "weights": weights_digest})
    return fingerprint({"fields": {k: side[k] for k in STUDENT_FIELDS},
                        "weights": weights_digest})


def read_sidecar(path: str | Path) -> dict:
    """``student.json``, refused unless it has the shape, format and version this code reads
    and (version 2) every fingerprinted field."""
    side = shapes.sidecar(read_json(path), path)
    if side["format"] != STUDENT:
        raise ArtifactError(f"{path} is not a train-student sidecar (format {STUDENT!r})")
    version = side.get("format_version", 1)
    if not 1 <= version <= SIDECAR_VERSION:
        raise ArtifactError(f"{path} has format version {version}; this kdep-cache reads 1.."
                            f"{SIDECAR_VERSION} (a newer kdep-cache wrote it)")
    missing = [k for k in STUDENT_FIELDS if k not in side] if version >= 2 else []
    if missing:
        raise ArtifactError(f"{path} lacks {', '.join(missing)}, which its format version "
                            f"{version} fingerprints: it was edited or damaged; restore it")
    return side


def predates_note(side: dict, path) -> str | None:
    """One line for a sidecar written before its every field was fingerprinted."""
    if side.get("format_version", 1) >= SIDECAR_VERSION:
        return None
    return (f"{path} predates format version {SIDECAR_VERSION}: its input normalisation, "
            "image size and classes are not covered by its fingerprint (weights and settings "
            "are checked)")


def check_student_weights(side: dict, state_dict: dict, weights_path, sidecar_path) -> None:
    """Refuse weights (or sidecar fields) that are not the ones the sidecar fingerprints."""
    from ..storage.digest import weights_sha
    if student_fingerprint(side, weights_sha(state_dict)) != side["fingerprint"]:
        raise ArtifactError(f"{weights_path} and {sidecar_path} do not match its fingerprint "
                            "(weights or recorded fields changed, damaged or from another run): "
                            f"run `kdep-cache verify {Path(sidecar_path).parent}`, then restore "
                            "the run's files or train anew")


def check_finished_run(out: Path, side: dict) -> None:
    """A rerun of a finished train-student: its weights must be there and be its own."""
    from ..models.weights import load_state_dict_file
    weights = out / STUDENT_FILE
    if not weights.is_file():
        raise ArtifactError(f"{out} holds the {SIDECAR} of a finished run but no {STUDENT_FILE}:"
                            f" restore it, or remove {out / SIDECAR} to train again")
    check_student_weights(side, load_state_dict_file(weights), weights, out / SIDECAR)


def paths_fingerprint(paths: list[str]) -> str:
    """The image-list fingerprint (extract's ``settings.images``): its sorted relative paths."""
    return ImageList("", list(paths)).fingerprint


def image_list_problem(doc, recorded: str | None) -> str | None:
    """Why ``images.json`` content ``doc`` is not the list fingerprinted as ``recorded`` (None:
    it is). Labels and classes are a function of the paths (first folder level), so they are
    recomputed from them; ``recorded`` that is no sha256 (synthetic test caches) is skipped."""
    if not isinstance(doc, dict) or not isinstance(doc.get("paths"), list) or not all(
            isinstance(p, str) for p in doc["paths"]):
        return "not an image list (no list of paths)"
    if not (isinstance(recorded, str) and len(recorded) == 64):
        return None
    if paths_fingerprint(doc["paths"]) != recorded:
        return (f"its paths (fingerprint {paths_fingerprint(doc['paths'])[:16]}) are not the "
                f"cache's image list {recorded[:16]}")
    labels, classes = class_labels(doc["paths"])
    if doc.get("labels") != labels or doc.get("classes") != classes:
        return "its labels or classes are not those of its paths (class = first folder level)"
    return None


def read_image_list(store_dir: Path, settings: dict, root: str | None = None) -> ImageList:
    """A cache's ``images.json``, refused unless it is the list its manifest fingerprints."""
    path = Path(store_dir) / IMAGES
    if not path.is_file():
        raise ArtifactError(f"{path} is missing: the image list of this cache (run `kdep-cache "
                            f"verify {store_dir}`)")
    doc = read_json(path)
    why = image_list_problem(doc, settings.get("images"))
    if why is not None:
        raise ArtifactError(f"{path}: {why} (edited or damaged): run `kdep-cache verify "
                            f"{store_dir}`")
    labels, classes = class_labels(doc["paths"])
    return ImageList.from_json({"labels": labels, "classes": classes, **doc}, root=root)
