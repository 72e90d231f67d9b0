"""#23.3, #23.8, #23.16: files in an image folder that must be skipped (with the reason
recorded) rather than hang, exhaust memory or abort the extract: a FIFO named ``x.jpg``, a
link to /dev/zero, a file above --max-file-mb, a non-UTF-8 file name, a JPEG whose header
claims far more pixels than its data holds."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import HERE
from PIL import Image

from kdep_cache.cache import RAW, Store
from kdep_cache.views.images import BadImage, file_problem, load_rgb

CIFAR = HERE / "data" / "cifar"
RUN = "import sys; from kdep_cache.cli import main; sys.argv[0] = 'kdep-cache'; main()"


def run_cli(*args, timeout=240) -> subprocess.CompletedProcess:
    """The real CLI in a child process: a hang fails the test instead of the suite."""
    return subprocess.run([sys.executable, "-c", RUN, *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)


def extract_args(data, out, teacher, *extra) -> list:
    return ["extract", "--data", data, "--teacher", "resnet18", "--teacher-weights", teacher,
            "--out", out, "--views", 1, "--image-size", 32, "--batch-size", 4, "--workers", 0,
            "--device", "cpu", *extra]


@pytest.fixture()
def special(tmp_path) -> Path:
    """Two good JPEGs, a FIFO, a /dev/zero link and a 3 MiB (sparse) file, all named .jpg."""
    d = tmp_path / "special"
    d.mkdir()
    for f in sorted((CIFAR / "cat").iterdir())[:2]:
        shutil.copy(f, d / f"good_{f.name}")
    os.mkfifo(d / "fifo.jpg")
    os.symlink("/dev/zero", d / "devzero.jpg")
    with open(d / "huge.jpg", "wb") as f:
        f.truncate(3 * 2**20)
    return d


def test_file_problem_refuses_special_and_large_files_from_stat_alone(special):
    assert file_problem(special / "fifo.jpg") == "not a regular file (a FIFO)"
    assert file_problem(special / "devzero.jpg") == "not a regular file (a character device)"
    assert "exceeds --max-file-mb 1" in file_problem(special / "huge.jpg", 2**20)
    assert file_problem(special / "huge.jpg") is None  # no limit given
    assert file_problem(special / "missing.jpg").startswith("file not found")
    good = next(special.glob("good_*"))
    assert file_problem(good, 2**20) is None
    for name in ("fifo.jpg", "devzero.jpg"):  # load_rgb would block / read forever
        with pytest.raises(BadImage, match="not a regular file"):
            load_rgb(special / name)


def test_extract_skips_fifo_devzero_and_huge_files_and_records_why(special, tmp_path,
                                                                  teacher_file):
    out = tmp_path / "c"
    r = run_cli(*extract_args(special, out, teacher_file, "--max-file-mb", 1))
    assert r.returncode == 0, r.stderr
    skipped = {s["path"]: s["reason"] for s in Store(out, RAW).manifest["skipped"]}
    assert set(skipped) == {"fifo.jpg", "devzero.jpg", "huge.jpg"}, skipped
    assert "FIFO" in skipped["fifo.jpg"] and "device" in skipped["devzero.jpg"]
    assert "--max-file-mb" in skipped["huge.jpg"]
    assert "Traceback" not in r.stderr


def test_bad_max_file_mb_is_refused(special, tmp_path, teacher_file):
    from click.testing import CliRunner

    from kdep_cache.cli import main
    for bad in ("0", "-1", "nan", "inf"):
        res = CliRunner().invoke(main, [str(a) for a in extract_args(
            special, tmp_path / "c", teacher_file, "--max-file-mb", bad)])
        assert res.exit_code == 2 and "--max-file-mb must be" in res.output, res.output
    assert not (tmp_path / "c").exists()


def _truncated_giant_jpeg() -> bytes:
    """A JPEG whose SOF header says 9000x9000 but whose scan holds only 32x32 pixels."""
    rgb = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    b = io.BytesIO()
    Image.fromarray(rgb).save(b, "JPEG", quality=90)
    data = bytearray(b.getvalue())
    sof = data.find(b"\xff\xc0")
    data[sof + 5:sof + 9] = (9000).to_bytes(2, "big") + (9000).to_bytes(2, "big")
    return bytes(data)


def test_jpeg_claiming_more_pixels_than_its_data_is_skipped_as_truncated(tmp_path):
    p = tmp_path / "giant.jpg"
    p.write_bytes(_truncated_giant_jpeg())
    with Image.open(p) as im:
        assert im.size == (9000, 9000)
    with pytest.raises(BadImage, match="truncated"):
        load_rgb(p)
    with pytest.raises(BadImage, match="truncated"):
        load_rgb(p, draft=8)  # the DCT draft decodes the same (short) scan


def test_non_utf8_file_name_is_skipped_and_recorded_the_rest_extracted(tmp_path,
                                                                      teacher_file):
    d = tmp_path / "imgs"
    d.mkdir()
    for f in sorted((CIFAR / "cat").iterdir())[:3]:
        shutil.copy(f, d / f.name)
    bad = os.fsencode(str(d)) + b"/caf\xe9.jpg"  # Latin-1 bytes: not UTF-8
    with open(bad, "wb") as f:
        f.write((CIFAR / "cat" / "0012.jpg").read_bytes())
    out = tmp_path / "c"
    r = run_cli(*extract_args(d, out, teacher_file))
    assert r.returncode == 0, r.stderr
    paths = json.loads((out / "images.json").read_text())["paths"]
    assert len(paths) == 3 and all(p.isascii() for p in paths)
    scan = Store(out, RAW).manifest["scan"]
    assert any("not UTF-8" in s["reason"] for s in scan["skipped_files"]), scan
    assert "not UTF-8" in r.stderr
