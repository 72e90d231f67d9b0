"""The CLI layer: every bad value or path is refused before any import of torch or any file
written (one ``error:`` line, exit 2, no --out), choice lists come from the registries, and
Ctrl-C prints the exact command that resumes."""

from __future__ import annotations

import shlex
import subprocess
import sys

import pytest
from click.testing import CliRunner

from kdep_cache import checks, names
from kdep_cache.cli import main
from kdep_cache.errors import InputError


@pytest.fixture()
def dirs(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "store").mkdir()
    return tmp_path


def _args(cmd: str, d, extra: list[str]) -> list[str]:
    base = {"extract": ["--data", d / "imgs", "--teacher", "resnet18"],
            "fit-svd": ["--cache", d / "store", "--dim", "8"],
            "train-student": ["--student", "resnet18", "--targets", d / "store"]}[cmd]
    return [cmd, *map(str, base), "--out", str(d / "out"), *extra]


BAD = [  # (command, options, part of the message)
    ("extract", ["--seed", "-1"], "--seed must be in 0..4294967295"),
    ("extract", ["--seed", str(2**32)], "--seed must be in 0..4294967295"),
    ("extract", ["--crop-scale", "0.9", "0.1"], "0 < LO <= HI <= 1"),
    ("extract", ["--crop-scale", "nan", "1"], "finite"),
    ("extract", ["--crop-scale", "0", "0"], "0 < LO <= HI <= 1"),
    ("extract", ["--crop-scale", "1.5", "2"], "0 < LO <= HI <= 1"),
    ("extract", ["--image-size", "0"], "too small"),
    ("extract", ["--image-size", "31"], "too small"),
    ("extract", ["--views", "0"], "--views must be >= 1"),
    ("extract", ["--batch-size", "0"], "--batch-size must be >= 1"),
    ("extract", ["--workers", "-1"], "--workers must be >= 0"),
    ("extract", ["--fraction", "0"], "--fraction must be in (0, 1]"),
    ("extract", ["--fraction", "1.5"], "--fraction must be in (0, 1]"),
    ("extract", ["--fraction", "nan"], "finite"),
    ("extract", ["--shard-size", "0"], "--shard-size must be >= 1"),
    ("extract", ["--rank", "2", "--world-size", "2"], "--rank must be in 0..1"),
    ("extract", ["--world-size", "0"], "--world-size must be >= 1"),
    ("extract", ["--background", "purple"], "--background must be"),
    ("extract", ["--background", "1,2,300"], "--background must be"),
    ("extract", ["--file-list", "/nonexistent/list.txt"], "--file-list /nonexistent/list.txt"),
    ("extract", ["--teacher-weights", "/nonexistent/w.pth"], "does not exist"),
    ("fit-svd", ["--pts-t", "nan"], "--pts-t must be a finite number"),
    ("fit-svd", ["--pts-t", "0"], "--pts-t must be > 0"),
    ("fit-svd", ["--pts-n", "nan"], "--pts-n must be a finite number"),
    ("fit-svd", ["--pts-n", "-3"], "--pts-n must be > 0"),
    ("fit-svd", ["--pts-t", "inf"], "finite"),
    ("fit-svd", ["--dim", "0"], "--dim must be >= 1"),
    ("fit-svd", ["--seed", "-5"], "--seed must be in"),
    ("fit-svd", ["--fit-views", "0,x"], "--fit-views must be 'all'"),
    ("fit-svd", ["--student", "resnet18"], "exactly one of --dim"),
    ("train-student", ["--lr", "-0.1"], "--lr must be > 0"),
    ("train-student", ["--lr", "nan"], "finite"),
    ("train-student", ["--lr-step", "0"], "--lr-step must be > 0"),
    ("train-student", ["--workers", "-1"], "--workers must be >= 0"),
    ("train-student", ["--image-size", "0"], "too small"),
    ("train-student", ["--epochs", "0"], "--epochs must be >= 1"),
    ("train-student", ["--batch-size", "0"], "--batch-size must be >= 1"),
    ("train-student", ["--max-views", "0"], "--max-views must be >= 1"),
    ("train-student", ["--weight-decay", "-1e-4"], "--weight-decay must be >= 0"),
    ("train-student", ["--momentum", "1"], "--momentum must be in [0, 1)"),
    ("train-student", ["--momentum", "-0.1"], "--momentum must be in [0, 1)"),
    ("train-student", ["--loss-weight", "0"], "--loss-weight must be > 0"),
    ("train-student", ["--temperature", "-1"], "--temperature must be > 0"),
    ("train-student", ["--seed", "-1"], "--seed must be in"),
    ("train-student", ["--student", "resnet19"], "unknown --student 'resnet19'"),
    ("train-student", ["--cache", "/nonexistent/c"], "--cache /nonexistent/c does not exist"),
    ("train-student", ["--data", "/nonexistent/d"], "--data /nonexistent/d does not exist"),
    # #23.4: upper bounds, before anything is written
    ("extract", ["--views", "1000000000000"], "--views must be <= 1000"),
    ("extract", ["--image-size", "1000000000000"], "--image-size must be <= 4096"),
    ("extract", ["--workers", "1000000000000"], "--workers must be <= "),
    ("extract", ["--batch-size", "1000000000000"], "--batch-size must be <= "),
    ("extract", ["--shard-size", "1000000000000"], "--shard-size must be <= "),
    ("extract", ["--views", "1000", "--image-size", "4096"], "GiB of views"),
    ("fit-svd", ["--dim", "1000000000000"], "--dim must be <= "),
    ("train-student", ["--epochs", "1000000000000"], "--epochs must be <= 100000"),
    ("train-student", ["--workers", "1000000000000"], "--workers must be <= "),
    ("train-student", ["--max-views", "1000000000000"], "--max-views must be <= 1000"),
    ("train-student", ["--image-size", "1000000000000"], "--image-size must be <= 4096"),
]


@pytest.mark.parametrize("cmd,extra,msg", BAD, ids=[f"{c}{' '.join(e)}" for c, e, _ in BAD])
def test_bad_value_is_one_error_line_and_leaves_nothing(dirs, cmd, extra, msg):
    r = CliRunner().invoke(main, _args(cmd, dirs, extra))
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and msg in lines[0], r.output
    assert not (dirs / "out").exists()


@pytest.mark.parametrize("cmd,flag", [("extract", "--data"), ("fit-svd", "--cache"),
                                      ("train-student", "--targets")])
def test_missing_input_folder_is_refused(dirs, cmd, flag):
    args = _args(cmd, dirs, [])
    args[args.index(flag) + 1] = str(dirs / "missing")
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2 and f"error: {flag} {dirs / 'missing'} does not exist" in r.output
    assert not (dirs / "out").exists()


def test_argument_errors_never_import_torch(dirs):
    """In a fresh interpreter: the refusal happens with torch (and numpy) never imported."""
    code = ("import sys; from kdep_cache.cli import main\n"
            "try:\n    main(sys.argv[1:], prog_name='kdep-cache')\n"
            "except SystemExit as e:\n"
            "    print('EXIT', e.code, 'torch' in sys.modules, 'numpy' in sys.modules)\n")
    for args in (_args("extract", dirs, ["--seed", "-1"]),
                 _args("train-student", dirs, ["--lr", "-0.1"]),
                 ["extract", "--data", str(dirs / "nope"), "--teacher", "resnet50", "--out",
                  str(dirs / "out")]):
        r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                           timeout=60)
        assert r.stdout.strip() == "EXIT 2 False False", (r.stdout, r.stderr)
        assert r.stderr.startswith("error:")


def test_transfer_checks_for_the_transfer_cli(tmp_path):
    """checks.transfer_args: the rules cli_transfer.py applies before importing torch."""
    (tmp_path / "d").mkdir()
    ok = {"student": "random:resnet18", "data": str(tmp_path / "d"), "epochs": 3, "lr": 0.01,
          "seeds": (0, 1), "test_fraction": 0.2, "image_size": 32, "workers": 0}
    checks.transfer_args(ok)
    for bad, msg in [({"seeds": (0, 0)}, "distinct"), ({"seeds": (-1,)}, "--seeds must be in"),
                     ({"test_fraction": 1.0}, "(0, 1)"), ({"lr": float("nan")}, "finite"),
                     ({"image_size": 0}, "too small"), ({"student": "random:vgg"}, "unknown"),
                     ({"student": str(tmp_path / "nope")}, "does not exist"),
                     ({"data": str(tmp_path / "nope")}, "does not exist"),
                     ({"epochs": 0}, "--epochs must be >= 1"), ({"arch": "x"}, "unknown --arch")]:
        with pytest.raises(InputError) as e:
            checks.transfer_args({**ok, **bad})
        assert msg in str(e.value)


def test_checks_take_plain_values_for_library_configs():
    checks.check_options({"seed": 0, "lr": 0.1, "crop_scale": (0.08, 1.0), "fraction": 1,
                          "momentum": 0.0, "rank": 1, "world_size": 2, "lr_step": None})
    for opts, msg in [({"epochs": 2.0}, "integer"), ({"epochs": True}, "integer"),
                      ({"lr": "0.1"}, "number"), ({"seed": 2**32}, "0..4294967295")]:
        with pytest.raises(InputError) as e:
            checks.check_options(opts)
        assert msg in str(e.value)
    assert checks.background("white") == (255, 255, 255)
    assert checks.background(" 12, 34 ,56") == (12, 34, 56)
    assert checks.background([1, 2, 3]) == (1, 2, 3)


def test_choice_lists_are_the_registries():
    """The CLI offers exactly what the library accepts (names.py is the one definition)."""
    from kdep_cache.fit import align
    from kdep_cache.models import registry
    from kdep_cache.train import objectives
    assert tuple(objectives.OBJECTIVES) == names.OBJECTIVES
    assert set(align.ALIGNERS) == set(names.ALIGNERS)
    assert set(align.TRANSFORMS) == set(names.TRANSFORMS)
    assert set(align.NULLS) == set(names.NULLS)
    assert tuple(registry.KNOWN_STUDENTS) == names.KNOWN_STUDENTS
    cmds = {c.name: {p.name: p for p in c.params} for c in main.commands.values()}
    assert tuple(cmds["train-student"]["objective"].type.choices) == names.OBJECTIVES
    assert tuple(cmds["fit-svd"]["aligner"].type.choices) == names.ALIGNERS
    assert tuple(cmds["fit-svd"]["transform"].type.choices) == names.TRANSFORMS


def test_train_student_help_texts():
    out = CliRunner().invoke(main, ["train-student", "--help"], terminal_width=200).output
    for opt in ("--epochs", "--batch-size", "--workers", "--seed", "--device"):
        line = next(ln for ln in out.splitlines() if ln.strip().startswith(opt))
        assert len(line.split(maxsplit=2)) == 3, line  # option, metavar, help text
    ext = CliRunner().invoke(main, ["extract", "--help"], terminal_width=200).output
    assert "--crop-scale LO HI" in ext and "--background black|white|gray|R,G,B" in ext


@pytest.mark.parametrize("argv,expect", [
    (["train-student", "--student", "resnet18", "--targets", "{d}/store", "--out", "{d}/my run"],
     "kdep-cache train-student --student resnet18 --targets {d}/store --out '{d}/my run' "
     "--resume"),
    (["train-student", "--student", "resnet18", "--targets", "{d}/store", "--out", "{d}/r",
      "--resume"], "kdep-cache train-student --student resnet18 --targets {d}/store --out {d}/r "
     "--resume"),
    (["-q", "extract", "--data", "{d}/imgs", "--teacher", "resnet18", "--out", "{d}/c"],
     "kdep-cache -q extract --data {d}/imgs --teacher resnet18 --out {d}/c"),
    (["fit-svd", "--cache", "{d}/store", "--dim", "8", "--out", "{d}/t"],
     "kdep-cache fit-svd --cache {d}/store --dim 8 --out {d}/t"),
])
def test_ctrl_c_prints_the_exact_resume_command(dirs, monkeypatch, argv, expect):
    import kdep_cache.extract.run
    import kdep_cache.fit.checks
    import kdep_cache.fit.run
    import kdep_cache.train.student

    def interrupted(cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr(kdep_cache.fit.checks, "precheck", lambda opts: None)  # store is empty

    for mod, fn in ((kdep_cache.extract.run, "extract"), (kdep_cache.fit.run, "fit_svd"),
                    (kdep_cache.train.student, "train_student")):
        monkeypatch.setattr(mod, fn, interrupted)
    args = [a.format(d=dirs) for a in argv]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 130
    want = expect.format(d=shlex.quote(str(dirs)).strip("'"))
    assert r.output.strip() == f"interrupted; to resume, run: {want}", r.output
    cmd = r.output.split("run: ", 1)[1].strip()
    assert shlex.split(cmd)[1:] == args + (["--resume"] if "train-student" in args
                                           and "--resume" not in args else [])


def test_ecosystem_names_pass_the_torch_free_checks(tmp_path):
    (tmp_path / "d").mkdir()
    checks.train_args({"student": "timm:resnet18", "out": "x"})
    checks.fit_args({"student": "timm:vit_tiny_patch16_224", "cache": str(tmp_path)})
    checks.extract_args({"data": str(tmp_path / "d"), "teacher": "timm:vit_small"})
    checks.extract_args({"data": str(tmp_path / "d"), "teacher": f"hf:{tmp_path}"})
    with pytest.raises(InputError, match="--teacher /nonexistent/hf does not exist"):
        checks.extract_args({"data": str(tmp_path / "d"), "teacher": "hf:/nonexistent/hf"})
    with pytest.raises(InputError, match="unknown --student 'timm:'"):
        checks.train_args({"student": "timm:", "out": "x"})


def test_crop_scale_with_center_crops_is_named_as_ignored(dirs, caplog):
    """#23.15: --crop-scale means nothing to --augment center: one warning line, not silence
    (and none when --crop-scale is left at its default)."""
    for extra, warned in ((["--augment", "center", "--crop-scale", "0.5", "1"], True),
                          (["--augment", "center"], False),
                          (["--crop-scale", "0.5", "1"], False)):
        caplog.clear()
        r = CliRunner().invoke(main, _args("extract", dirs, extra))
        assert "no images" in r.output  # the (empty) folder is refused after the options
        hits = [m for m in caplog.messages if "--crop-scale does not apply" in m]
        assert len(hits) == int(warned), (extra, caplog.messages)
