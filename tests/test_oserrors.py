"""#23.9: ordinary OS errors and bad environment values end in one ``error:`` line and a
non-zero exit, never "internal error": --out at a file, under a file, under /proc; disk full
at the metrics.jsonl append (no 0-byte file left); a missing images.json; KDEP_THREADS=abc,
WORLD_SIZE=abc; diagnose --seed -1."""

from __future__ import annotations

import errno
import os
import shutil

import click
import pytest
from click.testing import CliRunner
from conftest import HERE, extract_cfg

from kdep_cache.cli import main
from kdep_cache.cli.base import _run
from kdep_cache.errors import ArtifactError, os_error_line
from kdep_cache.extract.run import extract
from kdep_cache.storage import fsio


@pytest.fixture(scope="module")
def cache(tmp_path_factory, teacher_file):
    d = tmp_path_factory.mktemp("oserr")
    shutil.copytree(HERE / "data" / "cifar", d / "images")
    extract(extract_cfg(d / "images", d / "cache", teacher_file, views=1))
    return d


def one_error_line(r, code: int = 2, part: str = "") -> str:
    lines = r.output.strip().splitlines()
    assert r.exit_code == code, r.output
    assert len(lines) == 1 and lines[0].startswith("error:"), r.output
    assert "internal error" not in r.output and part in lines[0], r.output
    return lines[0]


def _extract_args(d, teacher_file, out) -> list[str]:
    return ["extract", "--data", str(d / "images"), "--teacher", "resnet18", "--teacher-weights",
            teacher_file, "--views", "1", "--image-size", "32", "--workers", "0", "--device",
            "cpu", "--out", str(out)]


@pytest.mark.parametrize("where,part", [("file", "is a file, not a folder"),
                                        ("under-file", "is a file, not a folder"),
                                        ("proc", "")])
def test_out_at_a_file_under_a_file_or_proc_is_one_line(cache, teacher_file, tmp_path, where,
                                                        part):
    (tmp_path / "f").write_text("x")
    out = {"file": tmp_path / "f", "under-file": tmp_path / "f" / "sub",
           "proc": "/proc/kdep-test-out"}[where]
    r = CliRunner().invoke(main, _extract_args(cache, teacher_file, out))
    one_error_line(r, part=part)
    assert (tmp_path / "f").read_text() == "x"


@pytest.mark.parametrize("cmd", ["fit-svd", "train-student", "diagnose"])
def test_other_commands_refuse_an_out_under_a_file(cache, tmp_path, cmd):
    (tmp_path / "f").write_text("x")
    out = str(tmp_path / "f" / "sub")
    args = {"fit-svd": ["fit-svd", "--cache", str(cache / "cache"), "--dim", "8"],
            "train-student": ["train-student", "--student", "resnet18", "--cache",
                              str(cache / "cache"), "--objective", "conv1x1-pre"],
            "diagnose": ["diagnose", str(cache / "cache"), "--no-plots"]}[cmd]
    one_error_line(CliRunner().invoke(main, [*args, "--out", out]), part="is a file")


def test_os_errors_map_to_one_line_with_a_hint():
    line = os_error_line(OSError(errno.EROFS, os.strerror(errno.EROFS), "/mnt/ro/out"))
    assert "Read-only file system: '/mnt/ro/out'" in line and "writable" in line
    assert "free space" in os_error_line(OSError(errno.ENOSPC, "No space left on device", "/x"))
    assert "permissions" in os_error_line(PermissionError(errno.EACCES, "Permission denied"))

    @click.command()
    @_run
    def boom():
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), "/mnt/ro/out")

    line = one_error_line(CliRunner().invoke(boom, []), part="/mnt/ro/out")
    assert "Read-only" in line

    @click.command()
    @_run
    def no_errno():  # an OSError without errno (PIL's kind) is not an OS error on a path
        raise OSError("cannot identify image file")

    assert "internal error" in CliRunner().invoke(no_errno, []).output


def _fail_writes_to(monkeypatch, name: str):
    """``os.write`` raises ENOSPC for file descriptors open on a file called ``name``."""
    real = os.write

    def write(fd, data):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if os.path.basename(target) == name:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)


def test_append_line_on_a_full_disk_leaves_the_file_as_it_was(tmp_path, monkeypatch):
    old = tmp_path / "old.jsonl"
    old.write_text('{"epoch": 1}\n')
    _fail_writes_to(monkeypatch, "old.jsonl")
    with pytest.raises(ArtifactError, match="No space left"):
        fsio.append_line(old, '{"epoch": 2}')
    assert old.read_text() == '{"epoch": 1}\n'
    _fail_writes_to(monkeypatch, "new.jsonl")
    with pytest.raises(ArtifactError, match="No space left"):
        fsio.append_line(tmp_path / "new.jsonl", '{"epoch": 1}')
    assert not (tmp_path / "new.jsonl").exists()


def test_disk_full_at_the_metrics_append_is_one_line_and_no_empty_file(cache, tmp_path,
                                                                      monkeypatch):
    _fail_writes_to(monkeypatch, "metrics.jsonl")
    out = tmp_path / "run"
    r = CliRunner().invoke(main, ["train-student", "--student", "resnet18", "--cache",
                                  str(cache / "cache"), "--objective", "conv1x1-pre", "--epochs",
                                  "1", "--batch-size", "4", "--workers", "0", "--device", "cpu",
                                  "--precision", "fp32", "--out", str(out)])
    one_error_line(r, part="No space left")
    assert not (out / "metrics.jsonl").exists()


def test_missing_images_json_is_one_line(cache, tmp_path):
    broken = tmp_path / "cache"
    shutil.copytree(cache / "cache", broken)
    (broken / "images.json").unlink()
    for args in (["train-student", "--student", "resnet18", "--cache", str(broken),
                  "--objective", "conv1x1-pre", "--workers", "0", "--out", str(tmp_path / "s")],
                 ["diagnose", str(broken), "--no-plots", "--out", str(tmp_path / "d")]):
        one_error_line(CliRunner().invoke(main, args), part="images.json is missing")


@pytest.mark.parametrize("env,part", [({"KDEP_THREADS": "abc"}, "KDEP_THREADS"),
                                      ({"WORLD_SIZE": "abc", "RANK": "0"}, "WORLD_SIZE"),
                                      ({"WORLD_SIZE": "1", "RANK": "x"}, "RANK")])
def test_bad_environment_integers_are_one_line(cache, teacher_file, tmp_path, monkeypatch, env,
                                               part):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    out = tmp_path / "out"
    one_error_line(CliRunner().invoke(main, _extract_args(cache, teacher_file, out)),
                   part=f"environment variable {part} must be an integer")
    assert not out.exists()


@pytest.mark.parametrize("opt", [["--seed", "-1"], ["--tsne-points", "-1"]])
def test_diagnose_bad_seed_is_one_line(cache, tmp_path, opt):
    r = CliRunner().invoke(main, ["diagnose", str(cache / "cache"), "--no-plots", *opt, "--out",
                                  str(tmp_path / "d")])
    one_error_line(r, part=f"{opt[0]} must be")
    assert not (tmp_path / "d").exists()
