"""fit-svd's refusals that need neither torch nor a pass over the features (issue 24.4, 24.7):
is ``--cache`` a complete raw cache, which views are fitted, and are there enough fitted rows
(valid images x fitted views, read from the manifest) for the projection asked for. The CLI
runs :func:`precheck` before it imports the stage; the stage runs the same checks itself
before it accumulates any moments (a library caller gets them too)."""

from __future__ import annotations

from pathlib import Path

from ..cache import shapes
from ..cache.schema import CONFIG, MANIFEST, RAW, RESULTS, SIDECAR, STUDENT, TARGETS, TRANSFER
from ..errors import ArtifactError, InputError
from ..storage.fsio import read_json

_KINDS = {TARGETS: "targets written by `kdep-cache fit-svd`",
          STUDENT: "a student run of `kdep-cache train-student`", TRANSFER: "transfer results"}
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".svg")
# feature width of the torchvision students (models.registry.student_width, tested equal),
# so the row check runs before torch is imported; timm:NAME students are checked in the stage
STUDENT_WIDTHS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048, "resnet101": 2048,
                  "resnet152": 2048, "resnext50_32x4d": 2048, "wide_resnet50_2": 2048,
                  "mobilenet_v2": 1280, "mobilenet_v3_small": 576, "mobilenet_v3_large": 960}


def raw_manifest(cache: str | Path) -> dict:
    """The manifest of a complete raw cache, or one line saying what ``cache`` is instead."""
    p = Path(cache)
    if not p.is_dir():
        raise ArtifactError(f"--cache {p} does not exist or is not a folder")
    if (p / MANIFEST).is_file():
        m = read_json(p / MANIFEST)
        fmt = m.get("format") if isinstance(m, dict) else None
        if fmt == RAW or fmt not in _KINDS:  # one line if it is not of a manifest's shape
            m = shapes.manifest(m, p / MANIFEST)
            fmt = m["format"]
        if fmt == RAW:
            return m
        raise ArtifactError(f"--cache {p} holds {_KINDS.get(fmt, repr(fmt))}, not a raw cache: "
                            "give the --out folder of `kdep-cache extract`")
    if (p / CONFIG).is_file():
        cfg = read_json(p / CONFIG)
        fmt = cfg.get("format") if isinstance(cfg, dict) else None
        if fmt == RAW:
            raise ArtifactError(f"--cache {p} is an incomplete cache (no {MANIFEST}: its "
                                "extract is still running or was stopped); finish that "
                                "`kdep-cache extract` (rerun it to resume), then retry")
        if fmt in _KINDS:
            raise ArtifactError(f"--cache {p} holds {_KINDS[fmt]}, not a raw cache: give the "
                                "--out folder of `kdep-cache extract`")
    raise ArtifactError(f"--cache {p} is not a kdep-cache cache ({_what(p)}; no {MANIFEST}): "
                        "give the --out folder of `kdep-cache extract`")


def _what(p: Path) -> str:
    if (p / SIDECAR).is_file():
        return _KINDS[STUDENT]
    if (p / RESULTS).is_file():
        return _KINDS[TRANSFER]
    try:
        names = [q for _, q in zip(range(2000), p.rglob("*"))]
    except OSError:
        return "unreadable"
    if not names:
        return "an empty folder"
    if any(q.suffix.lower() in _IMAGE_SUFFIXES for q in names):
        return "an image folder: run `kdep-cache extract --data` on it first"
    return "no kdep-cache files"


def parse_views(text: str, k: int) -> list[int]:
    if text == "all":
        return list(range(k))
    try:
        views = sorted({int(v) for v in str(text).split(",")})
    except ValueError:
        raise InputError(f"--fit-views must be 'all' or view indices like 0,1; got {text!r}") from None
    if not views or views[0] < 0 or views[-1] >= k:
        raise InputError(f"--fit-views {text}: the cache has views 0..{k - 1}")
    return views


def valid_images(manifest: dict) -> int:
    """Images whose features are in the cache: all but the ones extract skipped."""
    return int(manifest["n_images"]) - len({s.get("id") for s in manifest.get("skipped") or []})


def min_rows(dim: int, aligner: str, null: str) -> int:
    """Rows a projection needs: an svd basis of D directions needs D + 1 centred rows (fewer
    leave directions that the data does not determine), unless ``--null zero`` gives the
    undetermined directions target 0; the channel selections need a variance (2 rows)."""
    return dim + 1 if aligner == "svd" and null != "zero" else 2


def check_rows(manifest: dict, views: list[int], dim: int, aligner: str = "svd",
               null: str = "keep") -> int:
    """Refuse, before any pass over the features, a fit with too few rows; return the rows."""
    n, k = valid_images(manifest), int(manifest["views"])
    rows, need = n * len(views), min_rows(dim, aligner, null)
    if rows >= need:
        return rows
    what = f"{n} valid images x {len(views)} fitted view{'s' * (len(views) != 1)} = {rows} rows"
    fixes = []
    if len(views) < k:
        fixes.append(f"fit all {k} views (--fit-views all: {n * k} rows)")
    fixes.append(f"more images or more views per image (extract --views, now {k})")
    if rows >= 3 and aligner == "svd":
        # the targets must be as wide as the student (train-student refuses others)
        fixes.append(f"a narrower student (--student, or --dim for one at most {rows - 1} "
                     "wide)")
    if aligner == "svd":
        fixes.append("--null zero (directions the rows do not determine get target 0)")
        fixes.append(f"a teacher whose feature rank covers {dim} (an EfficientNet-Lite or "
                     "MobileNet feature is a 1x1 conv of its last block, whose channels "
                     "bound its rank: 320 for Lite0, whatever the feature's width)")
    raise InputError(f"too few rows for a {dim}-component {aligner} projection: need at least "
                     f"{need}, the cache gives {what}. Options: {'; '.join(fixes)}")


_SPEC_KEYS = ("aligner", "transform", "pts_t", "pts_n", "seed", "null")


def precheck(opts: dict) -> None:
    """The CLI's torch-free checks of ``fit-svd`` options (``opts``: the click parameters)."""
    m = raw_manifest(opts["cache"])
    views = parse_views(opts.get("fit_views") or "0", int(m["views"]))
    dim = opts.get("dim")
    if dim is None:
        dim = STUDENT_WIDTHS.get(str(opts.get("student")))
    if dim is not None:
        from .align import AlignSpec, check_spec  # numpy only
        spec = AlignSpec(int(dim), **{k: opts[k] for k in _SPEC_KEYS if opts.get(k) is not None})
        check_spec(spec, int(m["dim"]))
        check_rows(m, views, spec.dim, spec.aligner, spec.null)


def rank_warning(null_dims: int, dim: int, null: str, transform: str) -> str | None:
    """One line, in the summary first and in the log, when the target is wider than the
    teacher feature's rank (e.g. EfficientNet-Lite0, rank 320, to a 1280-wide MobileNetV2:
    960 of 1280 channels)."""
    if not null_dims:
        return None
    rank = dim - null_dims
    head = (f"{null_dims} of the {dim} target channels ({null_dims / dim:.0%}) have no teacher "
            f"signal: the teacher feature has rank {rank} < {dim}, the target width")
    if null == "zero":
        return f"{head}; their targets are 0 (--null zero)"
    amp = f", amplified by {transform}" if transform != "none" else ""
    # not "--dim {rank}": train-student refuses targets narrower than its student, whose own
    # error sends the user back here (issue 24)
    return (f"{head}; their targets are storage rounding noise{amp}, which the student is "
            f"trained to regress. --null zero sets them to 0; a teacher of rank >= {dim} "
            "avoids them")
