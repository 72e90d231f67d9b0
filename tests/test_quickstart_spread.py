"""benchmarks/quickstart_spread.py (issue 24.3): argument handling, the dry run, the table
reader on compare's CSV, the spread, and resuming per run (the quickstart itself is not run)."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def qs():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("quickstart_spread",
                                                  ROOT / "benchmarks" / "quickstart_spread.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("argv,msg", [(["--threads", "two"], "--threads takes counts"),
                                      (["--threads", "0"], "must be >= 1"),
                                      (["--runs", "0"], "must be >= 1"),
                                      (["--set", "EPOCHS"], "--set takes VAR=VALUE")])
def test_bad_arguments_are_one_line(qs, argv, msg, capsys):
    with pytest.raises(SystemExit) as e:
        qs.parse_args(argv)
    assert e.value.code == 2 and msg in capsys.readouterr().err


def test_dry_run_lists_every_run_and_writes_nothing(qs, tmp_path, capsys):
    out = tmp_path / "s.json"
    qs.main(["--threads", "2,1", "--runs", "2", "--work", str(tmp_path / "w"), "--out", str(out),
             "--set", "EPOCHS=2", "--dry-run"])
    lines = capsys.readouterr().out.splitlines()
    assert [x.split()[0] for x in lines] == ["t2-r0", "t2-r1", "t1-r0", "t1-r1"]
    assert "KDEP_THREADS=1" in lines[2] and "EPOCHS=2" in lines[0] and "[to run]" in lines[0]
    assert not out.exists() and not (tmp_path / "w").exists()


def test_read_table_from_compare_csv(qs, tmp_path):
    (tmp_path / "table.csv").write_text(
        "student,cifar10-mini mean,cifar10-mini std,cifar10-mini n,mean mean,mean std,mean n\n"
        "resnet18 KDEP (SVD+PTS) [linear],45.0000,,1,45.0000,,1\n"
        "resnet18 random init [linear],32.6000,,1,32.6000,,1\n")
    assert qs.read_table(tmp_path) == {"resnet18 KDEP (SVD+PTS) [linear]": 45.0,
                                       "resnet18 random init [linear]": 32.6}


def _run(t, i, kdep):
    return {"key": f"t{t}-r{i}", "threads": t, "run": i, "table": {"kdep": kdep, "rand": 32.6}}


def test_spread_per_thread_count_and_overall(qs):
    s = qs.spread([_run(2, 0, 45.0), _run(2, 1, 45.0), _run(1, 0, 47.2)])
    assert s["threads=2"]["bitwise_same"] and s["threads=2"]["rows"]["kdep"]["std"] == 0
    assert s["threads=1"]["rows"]["kdep"]["std"] is None
    a = s["all"]
    assert not a["bitwise_same"] and a["rows"]["kdep"]["min"] == 45.0
    assert a["rows"]["kdep"]["max"] == 47.2 and a["rows"]["rand"]["values"] == [32.6] * 3


def test_each_run_is_recorded_and_a_rerun_resumes(qs, tmp_path, monkeypatch):
    calls = []

    def fake(p, a):
        calls.append(p["key"])
        if p["key"] == "t1-r0" and calls.count("t1-r0") == 1:
            raise SystemExit("interrupted")
        return {**p, "table": {"kdep": 45.0 + p["threads"]}, "wall_s": 1.0, "precision": "bf16"}

    monkeypatch.setattr(qs, "run_one", fake)
    args = ["--threads", "2,1", "--runs", "1", "--work", str(tmp_path / "w"),
            "--out", str(tmp_path / "s.json"), "--no-wait"]
    with pytest.raises(SystemExit):
        qs.main(args)
    held = json.loads((tmp_path / "s.json").read_text())
    assert [r["key"] for r in held["runs"]] == ["t2-r0"]
    qs.main(args)
    assert calls == ["t2-r0", "t1-r0", "t1-r0"]  # the done run is not repeated
    rec = json.loads((tmp_path / "s.json").read_text())
    assert [r["key"] for r in rec["runs"]] == ["t2-r0", "t1-r0"]
    assert rec["spread"]["all"]["rows"]["kdep"]["values"] == [47.0, 46.0]
    with pytest.raises(SystemExit, match="other --set"):
        qs.main(args + ["--set", "EPOCHS=2"])
