"""Stage 1b against independent references (numpy SVD, direct statistics)."""

import json

import h5py
import numpy as np
import pytest
from conftest import make_fake_cache

from kdep_cache.cache import TARGETS, Store
from kdep_cache.errors import ArtifactError, InputError
from kdep_cache.fit.align import AlignSpec, fit_projection, pts
from kdep_cache.fit.moments import Moments, fix_signs, pca, std_ratio
from kdep_cache.fit.run import FitConfig, fit_svd, load_projection


def _data(n=400, d=24, seed=0):
    rng = np.random.default_rng(seed)
    scales = np.geomspace(10.0, 0.05, d)  # strongly unequal channel variances
    mix = np.linalg.qr(rng.normal(size=(d, d)))[0]
    return (rng.normal(size=(n, d)) * scales) @ mix.T + 3.0 + rng.normal(size=d)


def _principal_angles_deg(a, b):
    s = np.linalg.svd(np.linalg.qr(a)[0].T @ np.linalg.qr(b)[0], compute_uv=False)
    return np.degrees(np.arccos(np.clip(s, -1, 1)))


@pytest.mark.parametrize("chunk", [1, 7, 64, 400])
def test_streaming_pca_equals_numpy_svd_for_any_shard_sizes_and_order(chunk):
    x = _data()
    ref_c = x - x.mean(0)
    _, s, vt = np.linalg.svd(ref_c, full_matrices=False)
    ref_var = s**2 / (len(x) - 1)
    order = np.random.default_rng(chunk).permutation(len(x))  # shard order must not matter
    m = Moments.empty(x.shape[1])
    for lo in range(0, len(x), chunk):
        m = m.update(x[order[lo:lo + chunk]])
    evals, evecs = pca(m)
    assert np.allclose(evals, ref_var, rtol=1e-8, atol=0)
    assert np.allclose(evals[:8] / evals.sum(), ref_var[:8] / ref_var.sum(), rtol=1e-8)
    assert _principal_angles_deg(evecs[:, :8], vt[:8].T).max() < 1e-4
    for k in range(8):  # each direction individually, up to sign
        assert abs(abs(evecs[:, k] @ vt[k]) - 1) < 1e-9
    assert np.allclose(evecs.T @ evecs, np.eye(x.shape[1]), atol=1e-10)


def test_merged_halves_equal_whole():
    x = _data()
    a, b, whole = Moments.of(x[:150]), Moments.of(x[150:]), Moments.of(x)
    merged = a.merge(b)
    assert merged.n == whole.n
    assert np.allclose(merged.mean, whole.mean, rtol=1e-12)
    assert np.allclose(merged.m2, whole.m2, rtol=1e-10)


def test_sign_rule_is_deterministic():
    x = _data()
    e1 = pca(Moments.of(x))[1]
    e2 = fix_signs(-e1)
    assert np.array_equal(e1, e2)
    idx = np.argmax(np.abs(e1), axis=0)
    assert np.all(e1[idx, np.arange(e1.shape[1])] > 0)


def test_pts_is_odd_monotone_and_homogeneous():
    x = np.linspace(-5, 5, 1001)
    y = pts(x, 0.1, 3)
    assert np.allclose(pts(-x, 0.1, 3), -y)
    assert np.all(np.diff(y) > 0)
    for c in (0.5, 2.0, 10.0):
        assert np.allclose(pts(c * x, 0.1, 3), c ** (1 / 3) * y)
    # a channel Std Ratio R becomes R^(1/n) when channels differ only in scale
    z = np.random.default_rng(0).normal(size=(5000, 1)) * np.array([[1.0, 8.0]])
    r = std_ratio(pts(z, 0.1, 3).std(0))
    assert abs(r - 8 ** (1 / 3)) < 1e-9


def test_sn_sm_and_channel_selection():
    x = _data()
    m = Moments.of(x)
    raw_std = x.std(0, ddof=1)
    sn = fit_projection(AlignSpec(6, "svd", "sn"), m)
    assert np.allclose(sn.apply(x).std(0, ddof=1), 1.0, atol=1e-9)
    sm = fit_projection(AlignSpec(6, "svd", "sm"), m)
    assert np.allclose(sm.apply(x).std(0, ddof=1), np.sort(raw_std)[::-1][:6], rtol=1e-9)
    cs = fit_projection(AlignSpec(5, "cs-var", "none"), m)
    top = np.argsort(-raw_std)[:5]
    assert np.array_equal(cs.apply(x), x[:, top])
    it = fit_projection(AlignSpec(6, "interp", "none"), m)
    assert np.array_equal(it.apply(x), x[:, ::4])  # 24 -> 6: every 4th channel
    r1 = fit_projection(AlignSpec(6, "cs-rand", "none", seed=1), m).apply(x)
    r2 = fit_projection(AlignSpec(6, "cs-rand", "none", seed=1), m).apply(x)
    assert np.array_equal(r1, r2) and set(map(tuple, r1.T)) <= set(map(tuple, x.T))
    svd = fit_projection(AlignSpec(4, "svd", "none"), m).apply(x)
    assert np.allclose(svd.mean(0), 0, atol=1e-9)
    with pytest.raises(InputError, match="identity needs --dim equal"):
        fit_projection(AlignSpec(6, "identity"), m)
    with pytest.raises(InputError, match="larger than the teacher width"):
        fit_projection(AlignSpec(30, "svd"), m)
    with pytest.raises(InputError, match="need at least 25"):
        fit_projection(AlignSpec(24, "svd"), Moments.of(x[:20]))


def test_fit_svd_stage_writes_targets_and_true_std_ratios(tmp_path):
    k, n, d, dim = 3, 90, 24, 8
    feats = np.stack([_data(n, d, seed=s) for s in range(k)]).astype(np.float32).astype(np.float64)
    make_fake_cache(tmp_path / "c", feats, shard_size=32)
    s = fit_svd(FitConfig(str(tmp_path / "c"), str(tmp_path / "t"), dim=dim, dtype="float32"))
    t = Store(tmp_path / "t", TARGETS)
    proj, attrs = load_projection(tmp_path / "t" / "projection.h5")
    assert attrs["cache"] == Store(tmp_path / "c", "kdep-cache/raw-features").fingerprint
    # targets of every view = PTS((f - mean) @ V) with the basis fitted on view 0 only
    x0 = feats[0]
    _, sv, vt = np.linalg.svd(x0 - x0.mean(0), full_matrices=False)
    for v in range(k):
        got = t.read("targets", np.arange(n), view=v)
        ref = pts((feats[v] - x0.mean(0)) @ proj.weight, 0.1, 3)
        assert np.allclose(got, ref, rtol=1e-5, atol=1e-5)
        # basis == numpy SVD directions up to sign
        a = (feats[v] - x0.mean(0)) @ vt[:dim].T
        assert np.allclose(np.abs(got), np.abs(pts(a, 0.1, 3)), rtol=1e-4, atol=1e-4)
    ratios = t.manifest["std_ratio"]
    aligned = (x0 - x0.mean(0)) @ proj.weight
    assert ratios["raw"] == pytest.approx(std_ratio(x0.std(0, ddof=1)), rel=1e-9)
    assert ratios["aligned"] == pytest.approx(std_ratio(aligned.std(0, ddof=1)), rel=1e-9)
    assert ratios["transformed"] == pytest.approx(
        std_ratio(t.read("targets", np.arange(n), view=0).std(0, ddof=1)), rel=1e-6)
    assert s["explained_variance"] == pytest.approx((sv[:dim] ** 2).sum() / (sv**2).sum(), rel=1e-6)
    # rerun = same targets (resume / idempotent), another dim refused
    fit_svd(FitConfig(str(tmp_path / "c"), str(tmp_path / "t"), dim=dim, dtype="float32"))
    with pytest.raises(InputError, match="dim: 8"):
        fit_svd(FitConfig(str(tmp_path / "c"), str(tmp_path / "t"), dim=4, dtype="float32"))


def test_fit_svd_refuses_bad_caches(tmp_path):
    feats = _data(10, 12)[None]
    make_fake_cache(tmp_path / "c", feats, shard_size=16)
    with pytest.raises(InputError, match="need at least 13"):
        fit_svd(FitConfig(str(tmp_path / "c"), str(tmp_path / "t"), dim=12, fit_views="0"))
    assert not (tmp_path / "t").exists()  # nothing half-written
    bad = feats.copy()
    bad[0, 5, 3] = np.nan
    make_fake_cache(tmp_path / "nan", bad, shard_size=16)
    with pytest.raises(ArtifactError, match="non-finite"):
        fit_svd(FitConfig(str(tmp_path / "nan"), str(tmp_path / "t2"), dim=4))
    (tmp_path / "c" / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match="incomplete"):
        fit_svd(FitConfig(str(tmp_path / "c"), str(tmp_path / "t3"), dim=4))
    make_fake_cache(tmp_path / "v", feats, shard_size=16)
    m = json.loads((tmp_path / "v" / "manifest.json").read_text())
    m["format_version"] = 99
    (tmp_path / "v" / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match="format version 99"):
        fit_svd(FitConfig(str(tmp_path / "v"), str(tmp_path / "t4"), dim=4))
    with h5py.File(tmp_path / "c" / "shard-00000.h5", "r") as f:  # the shard itself is intact
        assert f["features"].shape == (1, 10, 12)


@pytest.mark.parametrize("transform", ["pts", "sn", "none"])
def test_null_directions_of_a_rank_deficient_teacher(tmp_path, transform):
    """A teacher feature of rank r < D (as Lite/MobileNet heads: 1x1 conv + BN of 320 channels)
    has D - r SVD directions holding only rounding noise. --null zero gives them target 0 and
    leaves the r real directions as they were; --null keep (the default, the paper's
    definition) keeps the noise, which pts/sn amplify. Reference: numpy SVD of the centred float64 data."""
    k, n, d, r, dim = 2, 120, 32, 6, 12
    rng = np.random.default_rng(5)
    z = rng.normal(size=(k, n, r)) * np.geomspace(8, 1, r)
    feats = z @ rng.normal(size=(r, d)) + rng.normal(size=d) + 1e-6 * rng.normal(size=(k, n, d))
    make_fake_cache(tmp_path / "c", feats, shard_size=50)
    out = {}
    for null in ("zero", "keep"):
        s = fit_svd(FitConfig(str(tmp_path / "c"), str(tmp_path / null), dim=dim, dtype="float32",
                              transform=transform, null=null))
        assert s["null_dims"] == dim - r and f"rank {r} < {dim}" in s["warning"]
        man = Store(tmp_path / null, TARGETS).manifest
        assert man["null_dims"] == dim - r
        if null == "zero":  # Std Ratios over the live channels: finite, = the first r's ratio
            t0 = Store(tmp_path / null, TARGETS).read("targets", np.arange(n), view=0)
            assert man["std_ratio"]["transformed"] == pytest.approx(
                std_ratio(t0[:, :r].astype(np.float64).std(0, ddof=1)), rel=1e-4)
        out[null] = Store(tmp_path / null, TARGETS).read("targets", np.arange(n), view=1)
    assert np.all(out["zero"][:, r:] == 0)
    assert np.allclose(out["zero"][:, :r], out["keep"][:, :r], rtol=1e-5, atol=1e-6)
    noise_std = out["keep"][:, r:].std(0)
    assert np.all(noise_std > (0.5 if transform == "sn" else 0))  # sn: noise blown up to std 1
    x0 = feats[0]
    sv = np.linalg.svd(x0 - x0.mean(0), compute_uv=False)
    assert np.sum(sv[:dim] > 1e-3 * sv[0]) == r  # the reference agrees on the rank
    proj, _ = load_projection(tmp_path / "zero" / "projection.h5")
    assert proj.spec.null == "zero"
    assert load_projection(tmp_path / "keep" / "projection.h5")[0].spec.null == "keep"


def test_specs_written_before_the_null_option_read_as_keep():
    old = {"dim": 4, "aligner": "svd", "transform": "pts", "pts_t": 0.1, "pts_n": 3.0, "seed": 0}
    spec = AlignSpec.from_json(old)
    assert spec.null == "keep" and spec.to_json() == old
    assert "null" not in AlignSpec(4).to_json()  # default keep: fingerprints as before
    assert AlignSpec(4, null="zero").to_json()["null"] == "zero"


def test_one_sided_raw_channel_targets_warn_and_are_recorded(tmp_path, caplog):
    """Raw-channel targets (cs-var) of a teacher whose features are mostly negative: fit-svd
    warns that a post-ReLU student will get dead features and records the count, equal to a
    direct count on the written targets; SVD targets of the same cache are centred: no warning."""
    k, n, d, dim = 2, 200, 16, 8
    rng = np.random.default_rng(3)
    feats = rng.normal(size=(k, n, d)) + np.r_[np.full(12, -4.0), np.zeros(4)]  # 12 one-sided
    make_fake_cache(tmp_path / "c", feats, shard_size=64)
    with caplog.at_level("WARNING", logger="kdep_cache.fit.run"):
        s = fit_svd(FitConfig(str(tmp_path / "c"), str(tmp_path / "cs"), dim=dim, dtype="float32",
                              aligner="cs-var", transform="none"))
    t = Store(tmp_path / "cs", TARGETS)
    want = int(np.sum((t.read("targets", np.arange(n), view=0) > 0).mean(0) < 0.05))
    assert want > dim // 2  # the fixture is one-sided by construction
    assert t.manifest["one_sided_channels"] == want
    assert s["warning"].startswith(f"{want} of {dim} target channels") and "--aligner svd" in s["warning"]
    assert s["warning"] in caplog.text and t.manifest["warning"] == s["warning"]
    s2 = fit_svd(FitConfig(str(tmp_path / "c"), str(tmp_path / "svd"), dim=dim, dtype="float32",
                           transform="none"))
    assert "warning" not in s2 and Store(tmp_path / "svd", TARGETS).manifest["warning"] is None
    assert Store(tmp_path / "svd", TARGETS).manifest["one_sided_channels"] == 0
