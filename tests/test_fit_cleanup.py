"""#23.12: fit-svd options that make the fit fail are refused up front, and a fit whose
targets overflow leaves nothing behind, so its own suggested fix works in the same --out."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_fake_cache

from kdep_cache.cli import main
from kdep_cache.fit.run import FitConfig, NonFiniteTargets, fit_svd


@pytest.fixture()
def cache(tmp_path):
    feats = np.random.default_rng(0).normal(0, 10, (1, 40, 16))
    return make_fake_cache(tmp_path / "cache", feats, shard_size=16)


@pytest.mark.parametrize("opt,value", [("--pts-n", "1e-300"), ("--pts-n", "1e12"),
                                       ("--pts-t", "1e-300"), ("--pts-t", "1e300")])
def test_pts_values_that_overflow_are_refused_before_anything_is_written(cache, tmp_path, opt,
                                                                         value):
    r = CliRunner().invoke(main, ["fit-svd", "--cache", str(cache), "--dim", "4", opt, value,
                                  "--out", str(tmp_path / "t")])
    assert r.exit_code == 2 and f"{opt} must be in" in r.output, r.output
    assert not (tmp_path / "t").exists()


def test_a_fit_whose_targets_overflow_leaves_nothing_and_its_fix_then_works(cache, tmp_path):
    out = tmp_path / "t"
    cfg = dict(cache=str(cache), out=str(out), dim=4, transform="pts", pts_t=1e-4, pts_n=1.0)
    with pytest.raises(NonFiniteTargets, match="use --dtype float32"):
        fit_svd(FitConfig(**cfg))  # |x| / 1e-4 ~ 1e5 > float16's 65504
    assert not out.exists()  # no config.json / projection.h5 locking the bad settings
    r = fit_svd(FitConfig(**cfg, dtype="float32"))
    assert r["dim"] == 4 and (out / "manifest.json").is_file()
