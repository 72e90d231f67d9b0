"""``diagnose``: every number in diagnose.json against an independent numpy computation.

The cache is built by the real pipeline (extract with a random ResNet-18 teacher over the 12
CIFAR JPEGs of tests/data, 2 classes, then fit-svd); the reference reads the HDF5 shards with
h5py directly and computes each statistic from its definition.
"""

import json

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import extract_cfg, make_fake_cache
from PIL import Image

from kdep_cache.cli.diagnose import diagnose as diagnose_cmd
from kdep_cache.diagnose.report import REPORT, diagnose
from kdep_cache.errors import ArtifactError, InputError, LineageError
from kdep_cache.extract.run import extract
from kdep_cache.fit.align import NULL_RTOL
from kdep_cache.fit.run import FitConfig, fit_svd


@pytest.fixture()
def built(images, tmp_path, teacher_file):
    cache = tmp_path / "cache"
    extract(extract_cfg(images, cache, teacher_file))
    fit_svd(FitConfig(cache=str(cache), out=str(tmp_path / "targets"), dim=6))
    return cache, tmp_path / "targets"


def _rows(store_dir, array, view):
    """All valid rows of ``array`` for ``view``, read from the shard files directly."""
    man = json.loads((store_dir / "manifest.json").read_text())
    out = []
    for s in man["shards"]:
        with h5py.File(store_dir / s["file"], "r") as f:
            out.append(f[array][view][f["valid"][()].astype(bool)].astype(np.float64))
    return np.concatenate(out)


def _std_ratio(std):
    return std.max() / std.min()


def test_every_number_matches_numpy(built, tmp_path):
    cache, targets = built
    r = diagnose(cache, tmp_path / "diag", targets=targets)
    x = _rows(cache, "features", 0)                                # (12, 512)
    n = len(x)
    assert r["rows"] == {"views": [0], "samples": n}
    # Std Ratio of the raw feature: largest / smallest per-channel std (sample std, ddof 1)
    std = x.std(0, ddof=1)
    assert np.allclose(r["channel_std"]["raw"], std, rtol=1e-9)
    assert r["std_ratio"]["raw"] == pytest.approx(_std_ratio(std), rel=1e-9)
    # spectrum: squared singular values of the centred matrix / (n - 1)
    sv = np.linalg.svd(x - x.mean(0), compute_uv=False)
    var = np.zeros(x.shape[1])
    var[:len(sv)] = sv**2 / (n - 1)
    evr = var / var.sum()
    got = np.asarray(r["spectrum"]["explained_variance_ratio"])
    assert np.allclose(got, evr, rtol=1e-7, atol=1e-12)
    assert np.allclose(r["spectrum"]["cumulative"], np.cumsum(evr), atol=1e-9)
    for p in (50, 90, 99):
        k = next(i + 1 for i, c in enumerate(np.cumsum(evr)) if c >= p / 100)
        assert r["spectrum"]["components_for"][f"{p}%"] == k
    assert r["spectrum"]["rank"] == int(np.sum(np.sqrt(var) > NULL_RTOL * np.sqrt(var[0])))
    assert r["spectrum"]["rank"] == n - 1                         # 12 centred rows: rank 11
    # compactness: between- over within-class scatter, from per-class means
    labels = np.asarray(json.loads((cache / "images.json").read_text())["labels"])
    within = between = 0.0
    mu = x.mean(0)
    for c in np.unique(labels):
        xc = x[labels == c]
        within += np.sum((xc - xc.mean(0)) ** 2) / n
        between += len(xc) * np.sum((xc.mean(0) - mu) ** 2) / n
    comp = r["compactness"]
    assert comp["classes"] == 2 and comp["samples"] == n
    assert comp["trace_within"] == pytest.approx(within, rel=1e-9)
    assert comp["trace_between"] == pytest.approx(between, rel=1e-9)
    assert comp["trace_total"] == pytest.approx(np.sum((x - mu) ** 2) / n, rel=1e-9)
    assert comp["compactness"] == pytest.approx(between / within, rel=1e-9)
    assert comp["within_class_fraction"] == pytest.approx(within / (within + between), rel=1e-9)
    # projected features: (x - mean) @ V from projection.h5; transformed = the stored targets
    with h5py.File(targets / "projection.h5", "r") as f:
        center, weight = f["center"][()], f["weight"][()]
    a_std = ((x - center) @ weight).std(0, ddof=1)
    t_std = _rows(targets, "targets", 0).std(0, ddof=1)
    assert np.allclose(r["channel_std_projected"]["aligned"], a_std, rtol=1e-7)
    assert np.allclose(r["channel_std_projected"]["transformed"], t_std, rtol=1e-7)
    assert r["std_ratio_projected"]["aligned"] == pytest.approx(_std_ratio(a_std), rel=1e-7)
    assert r["std_ratio_projected"]["transformed"] == pytest.approx(_std_ratio(t_std), rel=1e-7)
    real = a_std > NULL_RTOL * a_std.max()   # the null directions of a rank-deficient teacher
    assert r["std_ratio_projected"]["real_directions"] == int(real.sum())
    assert r["std_ratio_projected"]["aligned_real"] == pytest.approx(_std_ratio(a_std[real]),
                                                                     rel=1e-7)
    assert r["std_ratio_projected"]["transformed_real"] == pytest.approx(
        _std_ratio(t_std[real]), rel=1e-7)
    assert r["projection_explained_variance"] == pytest.approx(
        np.sum(a_std**2) / np.sum(std**2), rel=1e-9)
    # lineage
    man = json.loads((cache / "manifest.json").read_text())
    tman = json.loads((targets / "manifest.json").read_text())
    assert r["cache"]["fingerprint"] == man["fingerprint"]
    assert (r["cache"]["n_images"], r["cache"]["views"]) == (12, 2)
    assert r["class_names"] == ["cat", "ship"]
    assert r["targets"]["fingerprint"] == tman["fingerprint"]
    assert r["targets"]["projection"] == tman["projection_fingerprint"]
    # the file on disk is the returned report
    assert json.loads((tmp_path / "diag" / REPORT).read_text())["std_ratio"] == r["std_ratio"]


def test_all_views_and_the_tsne_subsample(built, tmp_path):
    cache, _ = built
    r = diagnose(cache, tmp_path / "d", views="all", tsne_points=7, seed=3, plots=False)
    x = np.concatenate([_rows(cache, "features", v) for v in (0, 1)])
    assert r["rows"]["samples"] == 24
    assert r["std_ratio"]["raw"] == pytest.approx(_std_ratio(x.std(0, ddof=1)), rel=1e-9)
    t = r["tsne"]
    ids = np.sort(np.random.default_rng(3).choice(np.arange(12), 7, replace=False))
    assert t["ids"] == ids.tolist() and t["view"] == 0 and t["perplexity"] == 2.0
    labels = json.loads((cache / "images.json").read_text())["labels"]
    assert t["labels"] == [labels[i] for i in ids]
    from sklearn.manifold import TSNE  # the same call on the same rows gives the same map
    ref = TSNE(2, perplexity=2.0, init="pca", random_state=3)
    emb = ref.fit_transform(_rows(cache, "features", 0)[ids])
    assert np.allclose(t["embedding"], emb, atol=1e-6)
    assert t["kl_divergence"] == pytest.approx(ref.kl_divergence_, rel=1e-6)
    assert "figures" not in r and not (tmp_path / "d" / "tsne.png").exists()


def test_figures_are_png_images(built, tmp_path):
    cache, targets = built
    r = diagnose(cache, tmp_path / "d", targets=targets)
    assert set(r["figures"]) == {"std", "spectrum", "tsne"}
    for name in r["figures"].values():
        with Image.open(tmp_path / "d" / name) as im:
            assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 300
            im.verify()
    assert not list((tmp_path / "d").glob("*.tmp"))


def test_compactness_separates_tight_classes_and_needs_labels(tmp_path):
    rng = np.random.default_rng(0)
    n, d = 40, 6
    centres = np.array([[0.0] * d, [5.0] * d])
    lab = [0] * 20 + [1] * 20
    tight = (rng.normal(size=(n, d)) * 0.1 + centres[lab])[None]
    loose = (rng.normal(size=(n, d)) * 3.0 + centres[lab])[None]
    a = diagnose(make_fake_cache(tmp_path / "a", tight, 7, labels=lab), tmp_path / "da", plots=False)
    b = diagnose(make_fake_cache(tmp_path / "b", loose, 7, labels=lab), tmp_path / "db", plots=False)
    assert a["compactness"]["compactness"] > 100 > 1 > b["compactness"]["compactness"]
    c = diagnose(make_fake_cache(tmp_path / "c", loose, 7), tmp_path / "dc", plots=False)
    assert c["compactness"]["available"] is False and "classes" in c["compactness"]["reason"]
    assert c["tsne"]["available"] and set(c["tsne"]["labels"]) == {-1}


def test_bad_inputs_are_one_line_errors(built, tmp_path):
    cache, targets = built
    with pytest.raises(ArtifactError, match="does not exist"):
        diagnose(tmp_path / "nope", tmp_path / "d")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        diagnose(tmp_path / "file", tmp_path / "d")
    with pytest.raises(ArtifactError, match="holds 'kdep-cache/targets'"):
        diagnose(targets, tmp_path / "d")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="is not a kdep-cache cache"):
        diagnose(tmp_path / "empty", tmp_path / "d")
    (cache / "manifest.json").rename(cache / "m.json")
    with pytest.raises(ArtifactError, match="incomplete"):
        diagnose(cache, tmp_path / "d")
    (cache / "m.json").rename(cache / "manifest.json")
    with pytest.raises(InputError, match="--fit-views 5"):
        diagnose(cache, tmp_path / "d", views="5")
    other = make_fake_cache(tmp_path / "other", np.ones((2, 12, 512)), 5)
    with pytest.raises(LineageError, match="was fitted on cache"):
        diagnose(other, tmp_path / "d", targets=targets)


def test_cli_command(built, tmp_path):
    cache, targets = built
    r = CliRunner().invoke(diagnose_cmd, [str(cache), "--out", str(tmp_path / "d"),
                                          "--targets", str(targets), "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.output)
    rep = json.loads((tmp_path / "d" / REPORT).read_text())
    assert s["std_ratio_raw"] == round(rep["std_ratio"]["raw"], 3)
    assert s["compactness"] == round(rep["compactness"]["compactness"], 4)
    r = CliRunner().invoke(diagnose_cmd, [str(cache), "--out", str(tmp_path / "j"), "--no-plots",
                                          "--tsne-points", "0"])
    assert r.exit_code == 0 and "none (--no-plots)" in r.output, r.output
    assert sorted(p.name for p in (tmp_path / "j").iterdir()) == [REPORT]  # no PNG, no lock
    assert json.loads((tmp_path / "j" / REPORT).read_text())["tsne"]["available"] is False
    bad = CliRunner().invoke(diagnose_cmd, [str(tmp_path / "nope"), "--out", str(tmp_path / "e")])
    assert bad.exit_code == 2
    assert bad.output.startswith("error: ") and len(bad.output.strip().splitlines()) == 1
    assert "Traceback" not in bad.output
    from kdep_cache.cli import main  # registered on the main group
    assert CliRunner().invoke(main, ["diagnose", "--help"]).exit_code == 0


def test_std_ratio_without_the_null_directions_of_a_rank_deficient_teacher(tmp_path):
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(2, 60, 3)) * [4.0, 2.0, 1.0]) @ rng.normal(size=(3, 8))  # rank 3 of 8
    cache = make_fake_cache(tmp_path / "c", x, 16)
    fit_svd(FitConfig(cache=str(cache), out=str(tmp_path / "t"), dim=6, dtype="float32"))
    r = diagnose(cache, tmp_path / "d", targets=tmp_path / "t", plots=False)
    with h5py.File(tmp_path / "t" / "projection.h5", "r") as f:
        a_std = ((x[0] - f["center"][()]) @ f["weight"][()]).std(0, ddof=1)
    p = r["std_ratio_projected"]
    assert p["real_directions"] == 3
    assert p["aligned_real"] == pytest.approx(_std_ratio(a_std[:3]), rel=1e-6)
    assert p["aligned"] > 1e4 * p["aligned_real"]  # the null dims' std is float rounding (~1e-8)
