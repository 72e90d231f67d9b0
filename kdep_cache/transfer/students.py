"""Resolve ``--student``: a train-student run directory (or its ``student.pth``), a plain
torchvision state_dict (with ``--arch``), ``random:NAME`` (the leakage check: :mod:`.leakage`), or ``teacher:CACHE`` (the cache's
teacher as the reference row: :mod:`.teacher`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..cache.sidecar import check_student_weights, predates_note, read_sidecar
from ..errors import ArtifactError, InputError
from ..models import FeatureNet, build_student
from ..models.registry import KNOWN_STUDENTS, NORMALIZATIONS
from ..models.weights import fit_state_dict, load_state_dict_file
from ..names import SIDECAR, STUDENT_FILE
from ..runtime.device import default_precision
from ..storage.fsio import sha256_file
from .reference import is_teacher

log = logging.getLogger(__name__)


@dataclass
class Student:
    """A student to transfer; :meth:`build` gives a fresh network with a new head."""

    kind: str                          # run | state_dict | random | teacher
    arch: str
    label: str
    spec: str
    weights: str | None = None         # resolved path of the state_dict
    sidecar: dict | None = None
    state_dict: dict | None = field(default=None, repr=False)
    weights_sha256: str | None = None

    @property
    def mean_std(self) -> tuple[list, list]:
        inp = (self.sidecar or {}).get("input") or {}
        if "mean" in inp and "std" in inp:
            return list(inp["mean"]), list(inp["std"])
        mean, std = NORMALIZATIONS["imagenet"]
        return list(mean), list(std)

    @property
    def image_size(self) -> int | None:
        return ((self.sidecar or {}).get("input") or {}).get("image_size")

    @property
    def size_source(self) -> str:
        return "student sidecar (pre-training size)"

    @property
    def lineage(self) -> dict | None:
        """What it was pre-trained on (the leakage check reads ``images_file`` / root)."""
        return (self.sidecar or {}).get("lineage")

    def auto_precision(self, device: torch.device, image_size: int) -> str:
        """``--precision auto`` for this row (students: :func:`runtime.default_precision`)."""
        return default_precision(device, image_size)

    def build(self, n_classes: int, seed: int) -> FeatureNet:
        """Backbone weights (or a seeded random init) + a seeded new linear head."""
        torch.manual_seed(seed)
        net = build_student(self.arch, num_classes=n_classes)
        if self.state_dict is not None:
            fit_state_dict(net, self.state_dict, f"--student {self.spec} ({self.arch})",
                           drop_head=True)
        return FeatureNet(net)

    def to_json(self) -> dict:
        side = self.sidecar or {}
        return {"label": self.label, "spec": self.spec, "kind": self.kind, "arch": self.arch,
                "weights": self.weights, "weights_sha256": self.weights_sha256,
                "fingerprint": side.get("fingerprint"), "lineage": side.get("lineage"),
                "settings": side.get("settings"), "input": side.get("input"),
                "sidecar_format": side.get("format")}


def _check_arch(name: str) -> str:
    if name not in KNOWN_STUDENTS and not name.startswith("timm:"):  # timm:NAME (issue 16)
        raise InputError(f"unknown architecture {name!r}; known: {', '.join(KNOWN_STUDENTS)}")
    return name


def resolve_student(spec: str, arch: str | None = None, label: str | None = None) -> Student:
    """Turn ``--student`` (+ ``--arch``, ``--label``) into a :class:`Student`."""
    if is_teacher(spec):
        from .teacher import resolve_teacher
        return resolve_teacher(spec, arch, label)
    if spec.startswith("random:"):
        name = _check_arch(spec.split(":", 1)[1])
        if arch and arch != name:
            raise InputError(f"--arch {arch} contradicts --student {spec}")
        return Student("random", name, label or spec, spec)
    path = Path(spec)
    if path.is_dir():
        path = path / STUDENT_FILE
        if not path.is_file():
            raise ArtifactError(f"{spec} has no {STUDENT_FILE}: not a finished train-student run "
                                "(resume it with train-student --resume)")
    elif not path.is_file():
        raise InputError(f"--student {spec}: no such file or directory (use a train-student "
                         "run directory, a state_dict file with --arch, or random:NAME)")
    sidecar = _read_sidecar(path.parent / SIDECAR) if path.name == STUDENT_FILE else None
    if sidecar is not None:
        recorded = sidecar.get("student")
        if arch and arch != recorded:
            raise InputError(f"--arch {arch} contradicts {path.parent / SIDECAR}, which records "
                             f"{recorded}")
        arch, kind = recorded, "run"
        default_label = path.parent.resolve().name
    else:
        if not arch:
            raise InputError(f"--student {spec} is a plain state_dict: pass --arch NAME "
                             f"({', '.join(KNOWN_STUDENTS[:4])}, ...)")
        kind, default_label = "state_dict", path.stem
    _check_arch(arch)
    sd = load_state_dict_file(path)
    if sd and all(k.startswith("net.") for k in sd):  # a training-loop checkpoint (FeatureNet)
        sd = {k[4:]: v for k, v in sd.items()}
    if sidecar is not None:  # the weights and the fields transfer uses are the run's own
        check_student_weights(sidecar, sd, path, path.parent / SIDECAR)
        if note := predates_note(sidecar, path.parent / SIDECAR):
            log.warning("%s", note)
    student = Student(kind, arch, label or default_label, spec, str(path.resolve()), sidecar, sd,
                      sha256_file(path))
    student.build(2, 0)  # fail now, naming the keys, if the weights do not fit
    return student


def _read_sidecar(path: Path) -> dict | None:
    return read_sidecar(path) if path.is_file() else None
