"""fit-svd's up-front refusals (issue 24.4, 24.7): too few fitted rows from the manifest,
before any pass over the features, with the real options; a folder that is no raw cache
named as what it is, without importing torch; the rank warning first in the summary."""

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_fake_cache

from kdep_cache.cache import TARGETS, Store
from kdep_cache.cli import main
from kdep_cache.errors import ArtifactError, InputError
from kdep_cache.fit import run as fitsvd
from kdep_cache.fit.checks import STUDENT_WIDTHS, check_rows, raw_manifest
from kdep_cache.fit.run import FitConfig, fit_svd

TORCH_FREE = ("import sys; from kdep_cache.cli import main\n"
              "try:\n    main(sys.argv[1:], prog_name='kdep-cache')\n"
              "except SystemExit as e:\n    print('EXIT', e.code, 'torch' in sys.modules)\n")


def _feats(k, n, d, seed=0):
    return np.random.default_rng(seed).normal(size=(k, n, d))


def _no_pass(*a, **kw):
    raise AssertionError("the moments were accumulated before the row check")


def test_too_few_rows_refused_from_the_manifest_with_the_real_options(tmp_path, monkeypatch):
    make_fake_cache(tmp_path / "c", _feats(2, 5, 16), shard_size=4)
    monkeypatch.setattr(fitsvd, "accumulate", _no_pass)
    with pytest.raises(InputError) as e:
        fit_svd(FitConfig(str(tmp_path / "c"), str(tmp_path / "t"), dim=12, fit_views="0"))
    msg = str(e.value)
    assert "need at least 13" in msg and "5 valid images x 1 fitted view = 5 rows" in msg
    assert "--fit-views all: 10 rows" in msg and "--dim for one at most 4 wide" in msg
    assert "--null zero" in msg and "feature rank covers 12" in msg
    assert not (tmp_path / "t").exists()
    with pytest.raises(InputError) as e:  # all views already fitted: not suggested again
        fit_svd(FitConfig(str(tmp_path / "c"), str(tmp_path / "t"), dim=12, fit_views="all"))
    assert "--fit-views all" not in str(e.value) and "= 10 rows" in str(e.value)
    assert "--dim for one at most 9 wide" in str(e.value)


def test_skipped_images_do_not_count_as_rows(tmp_path):
    make_fake_cache(tmp_path / "c", _feats(1, 14, 16), shard_size=8)
    m = raw_manifest(tmp_path / "c")
    assert check_rows(m, [0], 12) == 14
    m["skipped"] = [{"id": 1, "path": "a", "reason": "x"}, {"id": 2, "path": "b", "reason": "y"}]
    with pytest.raises(InputError, match="12 valid images"):
        check_rows(m, [0], 12)
    assert check_rows(m, [0], 12, aligner="cs-var") == 12  # channel selections need 2 rows


def test_null_zero_fits_fewer_rows_than_directions(tmp_path):
    """--null zero: the directions the rows do not determine get target 0; the others are
    the numpy SVD directions (independent reference)."""
    k, n, d, dim = 1, 8, 16, 12
    feats = _feats(k, n, d, seed=3)
    make_fake_cache(tmp_path / "c", feats, shard_size=8)
    s = fit_svd(FitConfig(str(tmp_path / "c"), str(tmp_path / "t"), dim=dim, dtype="float32",
                          transform="none", null="zero"))
    live = n - 1  # centred rank of 8 rows
    assert s["null_dims"] == dim - live
    t = Store(tmp_path / "t", TARGETS).read("targets", np.arange(n), view=0)
    assert np.all(t[:, live:] == 0)
    x = feats[0].astype(np.float32).astype(np.float64)
    u, sv, vt = np.linalg.svd(x - x.mean(0), full_matrices=False)
    ref = (x - x.mean(0)) @ vt[:live].T
    assert np.allclose(np.abs(t[:, :live]), np.abs(ref), rtol=1e-5, atol=1e-5)


def test_rank_below_the_target_width_is_the_first_summary_line(tmp_path, caplog):
    k, n, d, r, dim = 2, 60, 32, 5, 20
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(k, n, r)) @ rng.normal(size=(r, d)) + 1e-6 * rng.normal(size=(k, n, d))
    make_fake_cache(tmp_path / "c", feats, shard_size=30)
    with caplog.at_level("WARNING", logger="kdep_cache.fit.run"):
        s = fit_svd(FitConfig(str(tmp_path / "c"), str(tmp_path / "t"), dim=dim, dtype="float32"))
    assert next(iter(s)) == "warning"
    w = s["warning"]
    assert w.startswith(f"15 of the {dim} target channels (75%) have no teacher signal")
    assert f"rank {r} < {dim}" in w and "rounding noise, amplified by pts" in w
    assert "--null zero" in w and w in caplog.text
    # issue 24: no "--dim 5": train-student refuses targets narrower than its student
    assert "--dim" not in w and f"a teacher of rank >= {dim} avoids them" in w
    assert Store(tmp_path / "t", TARGETS).manifest["warning"] == w
    again = fit_svd(FitConfig(str(tmp_path / "c"), str(tmp_path / "t"), dim=dim, dtype="float32"))
    assert again["warning"] == w and again["note"] == "already complete"
    caplog.clear()
    with caplog.at_level("INFO", logger="kdep_cache.fit.run"):
        z = fit_svd(FitConfig(str(tmp_path / "c"), str(tmp_path / "z"), dim=dim, null="zero"))
    assert z["warning"].endswith("their targets are 0 (--null zero)")
    said = [r for r in caplog.records if r.getMessage() == z["warning"]]
    assert [r.levelname for r in said] == ["INFO"]  # what the user asked for: logged, no WARNING


def _incomplete(p):
    make_fake_cache(p, _feats(1, 4, 8), shard_size=4)
    (p / "manifest.json").unlink()
    return p


@pytest.mark.parametrize("kind, want", [
    ("images", "is not a kdep-cache cache (an image folder: run `kdep-cache extract --data`"),
    ("empty", "is not a kdep-cache cache (an empty folder; no manifest.json)"),
    ("incomplete", "is an incomplete cache (no manifest.json: its extract is still running"),
    ("targets", "holds targets written by `kdep-cache fit-svd`, not a raw cache"),
])
def test_fit_svd_on_a_folder_that_is_no_cache_says_what_it_is_without_torch(tmp_path, kind, want):
    p = tmp_path / kind
    if kind == "images":
        (p / "cat").mkdir(parents=True)
        (p / "cat" / "a.jpg").write_bytes(b"\xff\xd8")
    elif kind == "empty":
        p.mkdir()
    elif kind == "incomplete":
        _incomplete(p)
    else:
        p.mkdir()
        (p / "manifest.json").write_text(json.dumps({"format": TARGETS}))
    with pytest.raises(ArtifactError) as e:
        raw_manifest(p)
    assert want in str(e.value)
    args = ["fit-svd", "--cache", str(p), "--out", str(tmp_path / "o"), "--student", "resnet18"]
    r = subprocess.run([sys.executable, "-c", TORCH_FREE, *args], capture_output=True,
                       text=True, timeout=60)
    assert r.stdout.strip() == "EXIT 2 False", (r.stdout, r.stderr)
    assert r.stderr.startswith("error: ") and want in r.stderr and "still running" not in (
        r.stderr if kind != "incomplete" else "")
    assert not (tmp_path / "o").exists()


def test_too_few_rows_for_a_known_student_refused_by_the_cli_without_torch(tmp_path):
    make_fake_cache(tmp_path / "c", _feats(2, 40, 1300), shard_size=40)
    args = ["fit-svd", "--cache", str(tmp_path / "c"), "--out", str(tmp_path / "o"),
            "--student", "mobilenet_v2", "--fit-views", "all"]
    r = subprocess.run([sys.executable, "-c", TORCH_FREE, *args], capture_output=True,
                       text=True, timeout=60)
    assert r.stdout.strip() == "EXIT 2 False", (r.stdout, r.stderr)
    assert "need at least 1281" in r.stderr and "= 80 rows" in r.stderr
    make_fake_cache(tmp_path / "s", _feats(1, 40, 16), shard_size=40)
    args[2] = str(tmp_path / "s")
    args[args.index("--student"):args.index("--student") + 2] = ["--dim", "20"]
    r = subprocess.run([sys.executable, "-c", TORCH_FREE, *args], capture_output=True,
                       text=True, timeout=60)  # the projection's own checks: torch-free too
    assert r.stdout.strip() == "EXIT 2 False", (r.stdout, r.stderr)
    assert "--dim 20 is larger than the teacher width 16" in r.stderr
    # the CLI's message is the one line (no traceback); --dim gives the same check
    r = CliRunner().invoke(main, ["fit-svd", "--cache", str(tmp_path / "c"), "--out",
                                  str(tmp_path / "o"), "--dim", "100", "--fit-views", "0"])
    assert r.exit_code == 2 and "need at least 101" in r.output and "Traceback" not in r.output


def test_student_widths_table_matches_the_models():
    import torch

    from kdep_cache.models import student_width
    from kdep_cache.names import KNOWN_STUDENTS
    assert set(STUDENT_WIDTHS) == set(KNOWN_STUDENTS)
    with torch.device("meta"):  # shapes only: no weights allocated or initialised
        for name, width in STUDENT_WIDTHS.items():
            assert student_width(name) == width, name
