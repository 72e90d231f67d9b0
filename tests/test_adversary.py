"""#23 re-run of the adversary's bad-value category: every numeric option of extract, fit-svd,
train-student, transfer and diagnose, at nan / inf / -1 / 0 / 1e12 / text, ends in a clean
refusal (exit 2, an ``error:`` line or click's usage error) or a clean later error, never an
"internal error", a traceback or a hang.

The options are read from the click commands themselves, so an option added later is covered.
Two layers: with empty input folders (fast, default suite) a value that passes the checks
reaches the stage's first look at its input and is refused there at once; with real tiny
inputs (slow) every value the checks accept runs the stage for real (1 epoch, 12 images).
"""

from __future__ import annotations

import shutil
import signal

import click
import pytest
from click.testing import CliRunner
from conftest import HERE, extract_cfg

from kdep_cache.cli import main

VALUES = ("nan", "inf", "-1", "0", "1e12", "1000000000000", "abc")
COMMANDS = ("extract", "fit-svd", "train-student", "transfer", "diagnose")
TEXT_NUMBERS = {"seeds", "fit_views", "views"}  # numbers given as text (parsed by the command)


def _numeric(cmd: str) -> list[click.Option]:
    out = []
    for p in main.commands[cmd].params:
        if not isinstance(p, click.Option) or p.is_flag:
            continue
        numeric = isinstance(p.type, (click.types.IntParamType, click.types.FloatParamType))
        if numeric or p.name in TEXT_NUMBERS:
            out.append(p)
    return out


CASES = [(cmd, p.opts[0], p.nargs, v) for cmd in COMMANDS for p in _numeric(cmd) for v in VALUES]


def test_every_command_has_its_numeric_options_covered():
    names = {(c, o) for c, o, _, _ in CASES}
    for must in [("extract", "--views"), ("extract", "--image-size"), ("extract", "--workers"),
                 ("extract", "--max-file-mb"), ("fit-svd", "--pts-n"), ("fit-svd", "--dim"),
                 ("train-student", "--epochs"), ("train-student", "--lr"),
                 ("transfer", "--seeds"), ("transfer", "--test-fraction"),
                 ("diagnose", "--seed"), ("diagnose", "--tsne-points")]:
        assert must in names, must


def _base(cmd: str, d) -> list[str]:
    return [str(a) for a in {
        "extract": ["extract", "--data", d / "imgs", "--teacher", "resnet18", "--device", "cpu"],
        "fit-svd": ["fit-svd", "--cache", d / "store", "--dim", 8],
        "train-student": ["train-student", "--student", "resnet18", "--targets", d / "store",
                          "--device", "cpu"],
        "transfer": ["transfer", "--student", "random:resnet18", "--data", d / "imgs",
                     "--device", "cpu"],
        "diagnose": ["diagnose", d / "store", "--no-plots"],
    }[cmd]]


class Hang(Exception):
    pass


@pytest.fixture()
def deadline():
    """Fail (not hang) a case that runs past 60 s."""
    def ring(*_):
        raise Hang("no answer within 60 s")
    old = signal.signal(signal.SIGALRM, ring)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def _check(r, out) -> None:
    text = r.output
    assert "internal error" not in text and "Traceback" not in text, text
    assert not isinstance(r.exception, Hang), text
    assert r.exit_code in (0, 2, 3, 4), (r.exit_code, text)
    if r.exit_code:
        assert "error:" in text or "Error: Invalid value" in text, text


@pytest.mark.parametrize("cmd,opt,nargs,value", CASES,
                         ids=[f"{c}{o}={v}" for c, o, _, v in CASES])
def test_bad_numeric_value_is_a_clean_refusal(tmp_path, deadline, cmd, opt, nargs, value):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "store").mkdir()
    out = tmp_path / "out"
    r = CliRunner().invoke(main, [*_base(cmd, tmp_path), opt, *[value] * nargs, "--out",
                                  str(out)])  # a repeated option: the last one counts
    _check(r, out)
    assert r.exit_code != 0  # empty inputs: every case ends in a refusal of some kind
    assert not out.exists() or not any(out.iterdir()), r.output


@pytest.fixture(scope="module")
def real(tmp_path_factory, teacher_file):
    """Tiny real inputs of every command: images, a raw cache, a student run."""
    from kdep_cache.extract.run import extract
    from kdep_cache.train.student import TrainConfig, train_student
    d = tmp_path_factory.mktemp("adversary")
    shutil.copytree(HERE / "data" / "cifar", d / "images")
    extract(extract_cfg(d / "images", d / "cache", teacher_file, views=1))
    train_student(TrainConfig(student="resnet18", out=str(d / "student"), cache=str(d / "cache"),
                              objective="conv1x1-pre", epochs=1, batch_size=4, workers=0,
                              device="cpu", precision="fp32"))
    return d, teacher_file


def _real_base(cmd: str, d, teacher_file: str) -> list[str]:
    return [str(a) for a in {
        "extract": ["extract", "--data", d / "images", "--teacher", "resnet18",
                    "--teacher-weights", teacher_file, "--views", 1, "--image-size", 32,
                    "--batch-size", 4, "--workers", 0, "--device", "cpu"],
        "fit-svd": ["fit-svd", "--cache", d / "cache", "--dim", 8],
        "train-student": ["train-student", "--student", "resnet18", "--cache", d / "cache",
                          "--objective", "conv1x1-pre", "--epochs", 1, "--batch-size", 4,
                          "--workers", 0, "--device", "cpu", "--precision", "fp32"],
        "transfer": ["transfer", "--student", d / "student", "--data", d / "images",
                     "--mode", "finetune", "--epochs", 1, "--batch-size", 4, "--seeds", 0,
                     "--workers", 0, "--device", "cpu", "--precision", "fp32"],
        "diagnose": ["diagnose", d / "cache", "--no-plots", "--tsne-points", 0],
    }[cmd]]


@pytest.mark.slow
@pytest.mark.parametrize("cmd,opt,nargs,value", CASES,
                         ids=[f"{c}{o}={v}" for c, o, _, v in CASES])
def test_bad_numeric_value_on_real_inputs_never_crashes(real, tmp_path, deadline, cmd, opt,
                                                        nargs, value):
    d, teacher_file = real
    out = tmp_path / "out"
    r = CliRunner().invoke(main, [*_real_base(cmd, d, teacher_file), opt, *[value] * nargs,
                                  "--out", str(out)])
    _check(r, out)
