"""The README's multi-layer disk table is benchmarks/layer_bytes.py's output, i.e. computed
from the real teachers' channel counts (not typed by hand), and the per-view cost is
G * G * C * 2 bytes, which is what extract --layers actually stores."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("layer_bytes", ROOT / "benchmarks" / "layer_bytes.py")
lb = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lb)


@pytest.mark.slow  # builds ResNet-50, Lite0, ViT-S and ViT-B (~15 s on 2 cores)
def test_readme_table_is_computed_from_the_models():
    rows = lb.rows()
    by = {(r["teacher"], r["layer"]): r for r in rows}
    assert by[("ResNet-50", "layer3")]["channels"] == 1024  # the models, not hand numbers
    assert by[("ResNet-50", "layer4")]["G=2"] == 2 * 2 * 2048 * 2
    assert lb.markdown(rows) in (ROOT / "README.md").read_text()


def test_the_stored_map_costs_g_g_c_2_bytes(tmp_path, teacher_file):
    import shutil

    import h5py
    from conftest import HERE, extract_cfg

    from kdep_cache.extract.run import extract
    shutil.copytree(HERE / "data" / "cifar", tmp_path / "images")
    extract(extract_cfg(tmp_path / "images", tmp_path / "c", teacher_file, layers=("layer3",),
                        grid=2, shard_size=12))
    with h5py.File(tmp_path / "c" / "shard-00000.h5") as f:
        a = f["map:layer3"]
        k, n = a.shape[:2]
        assert a.nbytes / (k * n) == 2 * 2 * 256 * 2  # G*G*C*2 for ResNet-18 layer3 at G = 2
