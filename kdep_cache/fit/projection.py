"""``projection.h5``: the fitted projection as one HDF5 file (arrays + JSON attribute),
written atomically and read back as a :class:`~kdep_cache.fit.align.Projection`."""

from __future__ import annotations

import io
import json
from pathlib import Path

import h5py

from ..cache.schema import ARRAY_ATTR, PROJECTION
from ..cache.store import Store
from ..cache.trust import projection_fingerprint
from ..errors import ArtifactError
from ..storage.fsio import atomic_write, canonical_json
from .align import AlignSpec, Projection

__all__ = ["load_projection", "write_projection"]


def write_projection(path: Path, proj: Projection, fp: str, cache: Store, views, n, expl):
    attrs = {"format": PROJECTION, "format_version": 1, "fingerprint": fp,
             "spec": proj.spec.to_json(), "cache": cache.fingerprint, "fit_views": views,
             "fitted_samples": n, "explained_variance": expl}

    def write(tmp):
        buf = io.BytesIO()  # in memory, then one plain write (see cache.store.write_shard)
        with h5py.File(buf, "w") as f:
            f.attrs[ARRAY_ATTR] = canonical_json(attrs)
            for k, v in proj.arrays().items():
                f.create_dataset(k, data=v, track_times=False)
            evr = proj.eigenvalues / max(proj.eigenvalues.sum(), 1e-300)
            f.create_dataset("explained_variance_ratio", data=evr[:proj.spec.dim],
                             track_times=False)
        tmp.write_bytes(buf.getbuffer())
    atomic_write(path, write, sum(v.nbytes for v in proj.arrays().values()))


def load_projection(path: str | Path) -> tuple[Projection, dict]:
    try:
        with h5py.File(path, "r") as f:
            attrs = json.loads(f.attrs[ARRAY_ATTR])
            arrays = {k: f[k][()] for k in ("center", "weight", "scale", "eigenvalues", "raw_std")}
    except (OSError, KeyError, ValueError) as e:
        raise ArtifactError(f"{path} is not a readable projection: {e}") from None
    if not isinstance(attrs, dict) or projection_fingerprint(attrs, arrays) != attrs.get(
            "fingerprint"):  # what the targets and students record, recomputed from the data
        raise ArtifactError(f"{path} does not match its own fingerprint (changed or damaged): "
                            f"run `kdep-cache verify {path}`; rerun fit-svd into a new --out")
    return Projection(AlignSpec.from_json(attrs["spec"]), **arrays), attrs
