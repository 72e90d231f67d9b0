"""Safety: verify/info, kill -9 and disk-full resume, the writer lock, hostile image files,
safe loading. Subprocesses run the real CLI; a test-only throttle (KDEP_TEST_SLOW) slows one
function down so that a kill lands at a chosen moment without changing any result."""

from __future__ import annotations

import io
import json
import os
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import extract_cfg
from PIL import Image

from kdep_cache.audit.info import info
from kdep_cache.audit.verify import verify
from kdep_cache.cache import RAW, TARGETS, Store
from kdep_cache.cli import audit as cli_inspect  # noqa: F401  (registers info/verify on main)
from kdep_cache.cli import main
from kdep_cache.errors import ArtifactError, LockedError
from kdep_cache.extract.run import extract
from kdep_cache.fit.run import FitConfig, fit_svd
from kdep_cache.storage.fsio import writer_lock
from kdep_cache.train.student import TrainConfig, train_student
from kdep_cache.views.images import BadImage, load_rgb

CIFAR = Path(__file__).parent / "data" / "cifar"
BOOT = r"""
import os, sys, time
spec = os.environ.get("KDEP_TEST_SLOW")
if spec:  # module:function:mode:seconds
    import importlib
    mod, name, mode, secs = spec.split(":")
    m = importlib.import_module(mod)
    orig, secs = getattr(m, name), float(secs)
    if mode == "tmp":  # atomic_write: sleep once the temporary file is written, before the rename
        def slowed(path, write, *a, **k):
            def w(tmp):
                write(tmp)
                time.sleep(secs)
            return orig(path, w, *a, **k)
    else:  # sleep after the call returns
        def slowed(*a, **k):
            r = orig(*a, **k)
            time.sleep(secs)
            return r
    setattr(m, name, slowed)
from kdep_cache.cli import main
main(prog_name="kdep-cache")
"""


def cli(*args) -> list[str]:
    return [sys.executable, "-c", BOOT, *map(str, args)]


def extract_args(data, out, teacher, shard_size=5) -> list:
    return ["extract", "--data", data, "--teacher", "resnet18", "--teacher-weights", teacher,
            "--out", out, "--views", 2, "--image-size", 32, "--batch-size", 4, "--workers", 0,
            "--device", "cpu", "--shard-size", shard_size]


def invoke(args):
    return CliRunner().invoke(main, [str(a) for a in args])


def start(args, slow: str, tmp: Path) -> subprocess.Popen:
    """The CLI in a child process, with one function slowed down (see module docstring)."""
    env = {**os.environ, "KDEP_TEST_SLOW": slow}
    with open(tmp / "stderr.txt", "w") as err:
        proc = subprocess.Popen(cli(*args), env=env, stdout=subprocess.DEVNULL, stderr=err)
    proc.log = tmp / "stderr.txt"
    return proc


def kill_when(proc: subprocess.Popen, cond, timeout: float = 120) -> None:
    """SIGKILL ``proc`` as soon as ``cond()`` holds (fail if it ends first)."""
    t0 = time.monotonic()
    while not cond():
        assert proc.poll() is None, f"ended before the kill point: {proc.log.read_text()[-2000:]}"
        assert time.monotonic() - t0 < timeout, "kill point not reached"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL


def contents(d: Path) -> dict:
    out = {}
    for f in sorted(d.glob("shard-*.h5")):
        with h5py.File(f, "r") as h:
            out.update({f"{f.name}/{k}": h[k][()].tobytes() for k in h})
    return out


def same_store(a: Path, b: Path, fmt: str) -> None:
    ca, cb = contents(a), contents(b)
    assert ca and ca.keys() == cb.keys() and all(ca[k] == cb[k] for k in ca)
    assert Store(a, fmt).fingerprint == Store(b, fmt).fingerprint


@pytest.fixture(scope="module")
def pipe(tmp_path_factory, teacher_file):
    """cache -> targets -> 1-epoch student, built once for the read-only tests."""
    d = tmp_path_factory.mktemp("pipe")
    shutil.copytree(CIFAR, d / "images")
    extract(extract_cfg(d / "images", d / "cache", teacher_file))
    fit_svd(FitConfig(str(d / "cache"), str(d / "targets"), student="resnet18",
                      aligner="identity"))
    train_student(TrainConfig("resnet18", str(d / "run"), targets=str(d / "targets"), epochs=1,
                              batch_size=12, workers=0, device="cpu", precision="fp32",
                              keep_checkpoint=True))
    return SimpleNamespace(images=d / "images", cache=d / "cache", targets=d / "targets",
                           run=d / "run", teacher=teacher_file)


def flip_byte(path: Path, where: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * where)] ^= 0xFF
    path.write_bytes(bytes(data))


# ---------------------------------------------------------------- verify / info


def test_verify_reports_corrupt_missing_extra_and_passes_clean(pipe, tmp_path):
    c = tmp_path / "c"
    shutil.copytree(pipe.cache, c)
    r = CliRunner().invoke(main, ["verify", str(c)])
    assert r.exit_code == 0 and r.output.startswith("ok:"), r.output
    flip_byte(c / "shard-00001.h5")
    (c / "shard-00002.h5").unlink()
    shutil.copy(c / "shard-00000.h5", c / "shard-00007.h5")
    r = CliRunner().invoke(main, ["verify", str(c)])
    assert r.exit_code == 1
    lines = r.output.splitlines()
    assert [x.split(" ")[0] for x in lines[:3]] == ["corrupt:", "missing:", "extra:"]
    assert "shard-00001.h5" in lines[0] and "shard-00002.h5" in lines[1]
    assert "shard-00007.h5" in lines[2] and lines[-1].startswith("FAILED")
    rep = json.loads(CliRunner().invoke(main, ["verify", str(c), "--json"]).output)
    bad = {f["file"]: f["status"] for f in rep["files"] if f["status"] != "ok"}
    assert rep["ok"] is False and bad == {"shard-00001.h5": "corrupt", "shard-00002.h5": "missing",
                                          "shard-00007.h5": "extra"}


def test_verify_targets_projection_and_student(pipe, tmp_path):
    for p in (pipe.targets, pipe.run, pipe.targets / "projection.h5"):
        rep = verify(p)
        assert rep["ok"], rep["problems"]
    ck = {f["file"]: f["status"] for f in verify(pipe.run)["files"]}["checkpoint.pt"]
    assert ck == "ok"  # its digest was recomputed
    t, r = tmp_path / "t", tmp_path / "r"
    shutil.copytree(pipe.targets, t)
    shutil.copytree(pipe.run, r)
    flip_byte(t / "projection.h5", 0.6)  # inside the 512x512 float64 weight
    flip_byte(r / "student.pth", 0.6)
    assert verify(t)["problems"][0].startswith("corrupt: projection.h5")
    assert verify(r)["problems"][0].startswith("corrupt: student.pth")
    (r / "student.json").unlink()
    assert verify(r)["problems"][0].startswith("incomplete")


def test_train_student_refuses_stores_without_manifest(pipe, tmp_path):
    t, c = tmp_path / "t", tmp_path / "c"
    shutil.copytree(pipe.targets, t)
    shutil.copytree(pipe.cache, c)
    (t / "manifest.json").unlink()
    (c / "manifest.json").unlink()
    cfg = dict(epochs=1, batch_size=4, workers=0, device="cpu", precision="fp32")
    with pytest.raises(ArtifactError, match="incomplete"):
        train_student(TrainConfig("resnet18", str(tmp_path / "r1"), targets=str(t), **cfg))
    with pytest.raises(ArtifactError, match="incomplete"):
        train_student(TrainConfig("resnet18", str(tmp_path / "r2"), targets=str(pipe.targets),
                                  cache=str(c), **cfg))
    assert not verify(t)["ok"]


def test_info_shows_lineage_chain_with_matching_fingerprints(pipe, tmp_path):
    def get(p):
        r = CliRunner().invoke(main, ["info", str(p), "--json"])
        assert r.exit_code == 0, r.output
        return json.loads(r.output)

    ci, ti, si = get(pipe.cache), get(pipe.targets), get(pipe.run / "student.pth")
    cfp, tfp = ci["fingerprint"], ti["fingerprint"]
    assert ci["kind"] == "raw-cache" and ci["images"] == 12 and ci["views"] == 2
    assert ci["dim"] == 512 and ci["dtype"] == "float16" and ci["skipped"] == 0
    assert ci["teacher"]["name"] == "resnet18" and ci["augment"]["kind"] == "rrc"
    assert [n["stage"] for n in ci["lineage"]] == ["images", "cache"]
    chain = {n["stage"]: n for n in ti["lineage"]}
    assert chain["cache"]["fingerprint"] == cfp and chain["cache"]["status"] == "ok"
    assert chain["projection"]["status"] == "ok" and chain["targets"]["fingerprint"] == tfp
    stages = [n["stage"] for n in si["lineage"]]
    assert stages == ["images", "cache", "projection", "targets", "student"]
    chain = {n["stage"]: n for n in si["lineage"]}
    assert chain["cache"]["fingerprint"] == cfp and chain["cache"]["status"] == "ok"
    assert chain["targets"]["fingerprint"] == tfp
    assert chain["projection"]["fingerprint"] == info(pipe.targets / "projection.h5")["fingerprint"]
    assert chain["images"]["status"] == "ok" and si["epochs"] == 1
    text = CliRunner().invoke(main, ["info", str(pipe.run)]).output
    assert "-> cache" in text and cfp[:16] in text and "-> student" in text
    # a transfer result (format only; the transfer stage is not run here)
    side = json.loads((pipe.run / "student.json").read_text())
    res = tmp_path / "res"
    res.mkdir()
    (res / "results.json").write_text(json.dumps({
        "format": "kdep-cache/transfer", "format_version": 1, "settings_fingerprint": "x",
        "student": {"kind": "run", "label": "r18", "weights": str(pipe.run / "student.pth"),
                    "fingerprint": side["fingerprint"], "lineage": side["lineage"]},
        "dataset": {"path": "/d"}, "protocol": {"mode": "linear"}, "summary": {}}))
    tr = info(res)
    assert [n["status"] for n in tr["lineage"]][-2:] == ["ok", "this"]
    r = CliRunner().invoke(main, ["info", str(pipe.images)])
    assert r.exit_code == 2 and "not a kdep-cache artifact" in r.output


# ---------------------------------------------------------------- crash safety


def test_kill_extract_then_rerun_equals_uninterrupted(pipe, tmp_path):
    out = tmp_path / "c"
    args = extract_args(pipe.images, out, pipe.teacher)
    proc = start(args, "kdep_cache.cache.store:atomic_write:tmp:0.5", tmp_path)
    kill_when(proc, lambda: (out / "shard-00000.h5").is_file() and any(out.glob("*.tmp")))
    with pytest.raises(ArtifactError, match="incomplete"):
        Store(out, RAW)  # no manifest: readers refuse; the partial shard has only a temp name
    assert (out / ".lock").is_file()  # the dead writer's lock: the rerun must take it over
    ref = contents(pipe.cache)
    assert all(v == ref[k] for k, v in contents(out).items())  # finished shards are complete
    r = invoke(args)  # the same command again (in-process: saves a torch start-up)
    assert r.exit_code == 0, r.output
    same_store(out, pipe.cache, RAW)
    assert not (out / ".lock").exists()
    rep = verify(out)  # a temp file of the killed run is harmless: noted, never read
    assert rep["ok"] and sum("temporary" in n for n in rep["notes"]) == len(list(out.glob("*.tmp")))


def test_kill_fit_svd_then_rerun_equals_uninterrupted(pipe, tmp_path):
    out = tmp_path / "t"
    args = ["fit-svd", "--cache", pipe.cache, "--out", out, "--student", "resnet18",
            "--aligner", "identity"]
    proc = start(args, "kdep_cache.cache.store:atomic_write:tmp:0.5", tmp_path)
    kill_when(proc, lambda: (out / "shard-00000.h5").is_file() and any(out.glob("*.tmp")))
    with pytest.raises(ArtifactError, match="incomplete"):
        Store(out, TARGETS)
    assert verify(out / "projection.h5")["ok"]  # written (atomically) before the shards
    r = invoke(args)
    assert r.exit_code == 0, r.output
    same_store(out, pipe.targets, TARGETS)
    assert info(out / "projection.h5")["fingerprint"] == info(
        pipe.targets / "projection.h5")["fingerprint"]


@pytest.mark.slow
def test_kill_train_student_then_resume_equals_uninterrupted(pipe, tmp_path):
    def args(out):
        return ["train-student", "--student", "resnet18", "--targets", pipe.targets, "--out",
                out, "--epochs", 3, "--batch-size", 4, "--workers", 0, "--device", "cpu",
                "--precision", "fp32"]

    ref, run = tmp_path / "ref", tmp_path / "run"
    assert subprocess.run(cli(*args(ref)), capture_output=True, timeout=300).returncode == 0
    proc = start(args(run), "kdep_cache.train.loop:save_checkpoint:after:2.0", tmp_path)
    kill_when(proc, lambda: (run / "checkpoint.pt").is_file())
    assert not (run / "student.pth").exists() and not (run / "student.json").exists()
    assert torch.load(run / "checkpoint.pt", weights_only=True)["epoch"] == 1
    assert info(run)["complete"] is False
    assert verify(run)["problems"][0].startswith("incomplete")
    r = subprocess.run(cli(*args(run), "--resume"), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    a = torch.load(ref / "student.pth", weights_only=True)
    b = torch.load(run / "student.pth", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert info(ref)["fingerprint"] == info(run)["fingerprint"]
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3


def test_file_size_limit_fails_cleanly_then_rerun_completes(tmp_path, teacher_file):
    data = tmp_path / "imgs"
    shutil.copytree(CIFAR / "cat", data / "cat")
    bad = data / ("z" * 200)  # sorts last: the 6 bad files form the second shard
    bad.mkdir()
    for i in range(6):
        (bad / f"broken{i}{'y' * 200}.jpg").write_text("not an image")
    ref = tmp_path / "ref"
    extract(extract_cfg(data, ref, teacher_file, shard_size=6, pack="none"))
    s0, s1 = ((ref / f"shard-0000{i}.h5").stat().st_size for i in (0, 1))
    assert s1 > s0  # their long skip reasons make the second shard's attributes larger
    limit = (s0 + s1) // 2

    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death by signal
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    out = tmp_path / "out"
    r = subprocess.run(cli(*extract_args(data, out, teacher_file, 6), "--pack", "none"),
                       preexec_fn=limited,
                       capture_output=True, text=True, timeout=180)
    errors = [x for x in r.stderr.splitlines() if x.startswith(("error", "internal error"))]
    assert r.returncode == 2 and len(errors) == 1, r.stderr
    assert str(out / "shard-00001.h5") in errors[0] and "KiB" in errors[0]
    assert f"needs about {s1 / 1024:.1f} KiB" in errors[0]  # the real size of that shard
    assert not list(out.rglob("*.tmp")) and not (out / ".lock").exists()
    assert not (out / "shard-00001.h5").exists()
    assert contents(out) == {k: v for k, v in contents(ref).items() if "00000" in k}
    with pytest.raises(ArtifactError, match="incomplete"):
        Store(out, RAW)
    assert extract(extract_cfg(data, out, teacher_file, shard_size=6, pack="none"))["complete"]
    same_store(out, ref, RAW)


# ---------------------------------------------------------------- lock


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs Linux /proc")
def test_a_killed_but_unreaped_writer_holds_no_lock(tmp_path):
    """kill -9 then an immediate rerun: the killed writer may still be a zombie (not yet reaped
    by its parent). It holds nothing: its lock is taken over. A live holder is refused."""
    child = subprocess.Popen(["sleep", "60"])
    lock = tmp_path / "c" / ".lock"
    lock.parent.mkdir()
    lock.write_text(json.dumps({"pid": child.pid, "host": socket.gethostname()}))
    with pytest.raises(LockedError, match=f"pid {child.pid}"):
        with writer_lock(tmp_path / "c"):
            pass
    child.kill()
    t0 = time.monotonic()  # not waited for: it stays a zombie of this process
    while Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() - t0 < 10
        time.sleep(0.01)
    with writer_lock(tmp_path / "c"):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    child.wait()


def test_locked_output_is_refused_at_once_and_stale_lock_taken_over(pipe, tmp_path):
    out = tmp_path / "c"
    with writer_lock(out):
        t0 = time.monotonic()
        with pytest.raises(LockedError) as e:
            extract(extract_cfg(pipe.images, out, pipe.teacher))
        assert f"pid {os.getpid()}" in str(e.value) and socket.gethostname() in str(e.value)
        with pytest.raises(LockedError, match=f"pid {os.getpid()}"):
            fit_svd(FitConfig(str(pipe.cache), str(out), student="resnet18", aligner="identity"))
        r = invoke(extract_args(pipe.images, out, pipe.teacher))
        assert r.exit_code == 3 and r.output.startswith("error:") and "pid" in r.output, r.output
        assert time.monotonic() - t0 < 20 and sorted(os.listdir(out)) == [".lock"]
    other = tmp_path / "other"
    other.mkdir()
    (other / ".lock").write_text(json.dumps({"pid": 1, "host": "elsewhere.example"}))
    with pytest.raises(LockedError, match="elsewhere.example"):
        extract(extract_cfg(pipe.images, other, pipe.teacher))  # cannot tell: never taken over
    assert not out.exists()  # the lock held by the test created it; refused runs left nothing
    out.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    (out / ".lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    assert extract(extract_cfg(pipe.images, out, pipe.teacher))["complete"]
    assert not (out / ".lock").exists()
    same_store(out, pipe.cache, RAW)


# ---------------------------------------------------------------- hostile inputs


def _png(im: Image.Image) -> bytes:
    b = io.BytesIO()
    im.save(b, "PNG")
    return b.getvalue()


BAD = {"truncated.jpg": "truncated", "zero.jpg": "zero-byte", "text.jpg": "cannot identify",
       "bomb.png": "bomb", "a_loop.jpg": "symbolic links", "b_loop.jpg": "symbolic links"}
GOOD = ("png_as.jpg", "one_pixel.png", "deep16.png", "cmyk.jpg", "palette.png", "anim.gif")


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("hostile")
    for f in sorted((CIFAR / "cat").iterdir())[:2]:
        shutil.copy(f, d / f"good_{f.name}")
    jpg = (CIFAR / "cat" / "0012.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(jpg[: len(jpg) // 2])
    (d / "zero.jpg").write_bytes(b"")
    rgb = np.random.default_rng(0).integers(0, 255, (20, 24, 3), dtype=np.uint8)
    (d / "png_as.jpg").write_bytes(_png(Image.fromarray(rgb)))
    (d / "text.jpg").write_text("hello, I am not an image\n")
    Image.new("RGB", (1, 1), (200, 10, 10)).save(d / "one_pixel.png")
    Image.fromarray(np.arange(480, dtype=np.uint16).reshape(20, 24) * 130).save(d / "deep16.png")
    Image.new("CMYK", (24, 20), (10, 200, 30, 5)).save(d / "cmyk.jpg", "JPEG")
    pal = Image.new("P", (24, 20), 1)
    pal.putpalette([0, 255, 0, 255, 0, 0] + [0] * 762)
    pal.putpixel((0, 0), 0)
    pal.save(d / "palette.png", transparency=0)  # index 0 (green) fully transparent
    frames = [Image.new("RGB", (24, 20), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(d / "anim.gif", save_all=True, append_images=frames[1:], duration=50)
    b = bytearray(_png(Image.new("L", (2, 2))))
    b[16:24] = struct.pack(">II", 30000, 30000)  # IHDR width, height
    b[29:33] = struct.pack(">I", zlib.crc32(bytes(b[12:29])))  # valid IHDR CRC
    (d / "bomb.png").write_bytes(bytes(b))
    os.symlink("b_loop.jpg", d / "a_loop.jpg")
    os.symlink("a_loop.jpg", d / "b_loop.jpg")
    (d / "noperm.jpg").write_bytes(jpg)
    os.chmod(d / "noperm.jpg", 0)
    return d


def test_load_rgb_on_hostile_files(hostile):
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for name, why in BAD.items():
        with pytest.raises(BadImage, match=f"(?i){why}"):
            load_rgb(hostile / name)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0
    assert grown_kib < 200_000  # the 30000x30000 bomb (2.5 GiB as RGB) was never allocated
    ims = {n: load_rgb(hostile / n) for n in GOOD}
    assert all(im.mode == "RGB" for im in ims.values())
    assert ims["one_pixel.png"].size == (1, 1) and ims["png_as.jpg"].size == (24, 20)
    assert ims["anim.gif"].getpixel((0, 0)) == (255, 0, 0)  # first frame
    assert ims["palette.png"].getpixel((0, 0)) == (128, 128, 128)  # transparent -> gray
    assert load_rgb(hostile / "palette.png", (0, 0, 0)).getpixel((0, 0)) == (0, 0, 0)
    assert ims["palette.png"].getpixel((5, 5)) == (255, 0, 0)
    assert ims["deep16.png"].getpixel((23, 19)) == (242,) * 3  # 62270/65535 of 255
    if os.geteuid() == 0:  # root reads a chmod-000 file: it is simply a good image then
        assert load_rgb(hostile / "noperm.jpg").mode == "RGB"
    else:
        with pytest.raises(BadImage, match="permission denied"):
            load_rgb(hostile / "noperm.jpg")


def test_extract_over_hostile_folder_finishes_and_lists_skipped(hostile, tmp_path, teacher_file):
    out = tmp_path / "c"
    r = subprocess.run(cli(*extract_args(hostile, out, teacher_file)), capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    st = Store(out, RAW)
    skipped = {s["path"]: s["reason"] for s in st.manifest["skipped"]}
    # as root the chmod-000 file is readable (and then valid); otherwise it is skipped
    expect = set(BAD) | (set() if os.geteuid() == 0 else {"noperm.jpg"})
    assert set(skipped) == expect
    assert all(why.lower() in skipped[n].lower() for n, why in BAD.items())
    paths = json.loads((out / "images.json").read_text())["paths"]
    valid = np.concatenate([v for _, _, v in st.iter_shards("valid")])
    assert {p for p, v in zip(paths, valid) if v} == set(paths) - expect
    assert set(GOOD) <= set(paths) - expect


# ---------------------------------------------------------------- safe loading


class Evil:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickled_objects_in_weights_are_refused_unexecuted(pipe, tmp_path, teacher_file):
    marker = tmp_path / "pwned"
    sd = torch.load(teacher_file, weights_only=True)
    bad = tmp_path / "evil.pth"
    torch.save({"state_dict": sd, "obj": Evil(str(marker))}, bad)
    r = invoke(extract_args(pipe.images, tmp_path / "c", bad))
    assert r.exit_code == 2 and "pickled" in r.output and r.output.startswith("error:")
    assert not marker.exists() and not (tmp_path / "c").exists()


def test_hdf5_attributes_are_json_strings_and_arrays_plain(pipe):
    files = [*pipe.cache.glob("shard-*.h5"), *pipe.targets.glob("*.h5")]
    for f in files:
        with h5py.File(f, "r") as h:
            for k in h.attrs:
                assert h5py.check_string_dtype(h.attrs.get_id(k).dtype) is not None
                assert isinstance(json.loads(h.attrs[k]), dict)
            for k in h:
                assert h[k].dtype.kind in "fiub", (f, k)  # no object / opaque (pickle) data


@pytest.mark.parametrize("content", ["", "{not json", '{"pid": "abc", "host": 1}', "[]"])
def test_empty_or_unparsable_lock_is_taken_over_once_old(tmp_path, monkeypatch, caplog, content):
    """#23.5: a kill right after the lock is created (or a full disk) leaves an empty .lock:
    it holds no writer, so it is taken over with one warning line, young or old."""
    from kdep_cache.storage import locks
    monkeypatch.setattr(locks, "LOCK_GRACE_S", 0.3)
    for age in (10.0, 0.0):  # old: at once; young: after the grace time
        d = tmp_path / f"age{age:g}"
        d.mkdir()
        (d / ".lock").write_text(content)
        os.utime(d / ".lock", (time.time() - age,) * 2)
        with writer_lock(d):
            assert json.loads((d / ".lock").read_text())["pid"] == os.getpid()
        assert not (d / ".lock").exists()
    assert caplog.text.count("taking over") == 2


def test_a_young_empty_lock_whose_writer_records_itself_is_respected(tmp_path, monkeypatch):
    """The grace time exists for a live writer between creating its lock and writing it."""
    import threading

    from kdep_cache.storage import locks
    monkeypatch.setattr(locks, "LOCK_GRACE_S", 1.0)
    (tmp_path / ".lock").write_text("")
    record = json.dumps({"pid": os.getpid(), "host": socket.gethostname()})
    t = threading.Timer(0.2, lambda: (tmp_path / ".lock").write_text(record))
    t.start()
    with pytest.raises(LockedError, match=f"pid {os.getpid()}"):
        with writer_lock(tmp_path):
            pass
    t.join()


def test_disk_full_while_recording_the_lock_leaves_no_empty_lock(tmp_path, monkeypatch):
    """#23.5 at its source: the lock is removed when its record cannot be written."""
    import errno

    from kdep_cache.storage import locks

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(locks, "json", SimpleNamespace(dump=full, loads=json.loads))
    (tmp_path / "d").mkdir()
    with pytest.raises(OSError, match="No space left"):
        with writer_lock(tmp_path / "d"):
            pass
    assert not (tmp_path / "d" / ".lock").exists()
