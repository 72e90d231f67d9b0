"""``--student teacher:CACHE``: the teacher a raw cache was extracted with, as a transfer row.

The teacher is rebuilt by :func:`kdep_cache.models.from_cache.load_cache_teacher` (its recorded
weights, checked by sha256; a random-weight teacher is refused) and probed with its own
normalization, at the size the cache's views were rendered at, in the teacher's precision
(``auto`` = fp32 on CPU, fp16 on CUDA, as ``extract`` runs it). It is never fine-tuned here:
a teacher may be large, and the row exists to be the reference the students are read against
(``compare`` shows each student's score as a percentage of it). The leakage check reads the
cache's ``images.json``, as for a student trained on that cache.

The spec's prefix, the refusal to fine-tune and the percentages live in the torch-free
:mod:`.reference` (the CLI's early checks and ``compare`` import it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ArtifactError, InputError
from ..names import IMAGES, MANIFEST
from .reference import KIND, PREFIX
from .students import Student


@dataclass
class TeacherStudent(Student):
    """A :class:`Student` whose network is a cache's teacher (kind ``teacher``)."""

    teacher: object = field(default=None, repr=False)    # models.from_cache.CacheTeacher
    cache_fingerprint: str | None = None

    @property
    def mean_std(self) -> tuple[list, list]:
        return [float(m) for m in self.teacher.mean], [float(s) for s in self.teacher.std]

    @property
    def image_size(self) -> int:
        return int(self.teacher.image_size)

    @property
    def size_source(self) -> str:
        return f"the cache's view size ({Path(self.teacher.cache).name})"

    @property
    def lineage(self) -> dict:
        """The cache's image list: the leakage check reads it as for a student of that cache."""
        cache = Path(self.teacher.cache)
        return {"cache": self.cache_fingerprint, "images": None, "images_root": None,
                "images_file": str(cache / IMAGES), "cache_dir": str(cache)}

    def auto_precision(self, device, image_size: int) -> str:
        from ..runtime.device import resolved_precision
        return resolved_precision(device, "auto")  # extract's teacher default

    def build(self, n_classes: int, seed: int):
        """The teacher itself (no new head: it is only probed, never trained)."""
        return self.teacher.net

    def to_json(self) -> dict:
        mean, std = self.mean_std
        return {**super().to_json(), "fingerprint": self.cache_fingerprint,
                "lineage": self.lineage, "teacher": dict(self.teacher.info),
                "cache": self.teacher.cache,
                "input": {"mean": mean, "std": std, "image_size": self.image_size}}


def resolve_teacher(spec: str, arch: str | None = None, label: str | None = None
                    ) -> TeacherStudent:
    """``teacher:CACHE`` -> the cache's teacher, loaded and checked (one line otherwise)."""
    from ..cache import shapes
    from ..models.from_cache import load_cache_teacher
    from ..storage.fsio import read_json
    cache = spec[len(PREFIX):]
    if not cache:
        raise InputError(f"--student {spec}: name the raw cache, teacher:CACHE (an extract "
                         "--out folder)")
    if arch is not None:
        raise InputError(f"--arch does not apply to --student {spec}: the cache records its "
                         "teacher")
    if not Path(cache).is_dir():
        raise InputError(f"--student {spec}: {cache} is not a folder (teacher:CACHE names an "
                         "extract --out folder)")
    man = Path(cache) / MANIFEST
    t = load_cache_teacher(cache)
    if not man.is_file():
        raise ArtifactError(f"--student {spec}: the cache is unfinished (no {MANIFEST}): rerun "
                            "its extract to finish it first")
    fp = shapes.manifest(read_json(man), man).get("fingerprint")
    name = str(t.info.get("name"))
    return TeacherStudent(KIND, name, label or f"{name} (teacher)", spec,
                          t.info.get("weights"), None, None, t.info.get("weights_sha256"),
                          teacher=t, cache_fingerprint=fp)
