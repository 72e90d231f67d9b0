"""``compare``: unfinished folders (#22.17), like-with-like warnings and the settings shown
(#24.6), and no torch to read JSON (#24.7). The CLI runs in a subprocess, as a user runs it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kdep_cache.transfer import compare as cmp

# the compare entry point, then a check of what it imported (also after an error exit)
_RUN = ("import sys\nfrom kdep_cache.cli import main\ntry:\n    main(sys.argv[1:])\nfinally:\n"
        "    heavy = sorted({'torch', 'torchvision'} & set(sys.modules))\n"
        "    print('IMPORTED', heavy, file=sys.stderr)\n")


def run_cli(*args) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "-c", _RUN, *map(str, args)], capture_output=True,
                         text=True, timeout=120)
    assert "IMPORTED []" in res.stderr, res.stderr  # no torch / torchvision to read JSON
    return res


def result(d: Path, label: str, dataset: str, vals: list[float], mode: str = "linear",
           size: int = 32, precision: str = "fp32", epochs: int | None = None) -> Path:
    d.mkdir(parents=True)
    key = "test_top1" if mode == "linear" else "final_top1"
    seeds = [{"seed": i, key: v, "best_top1": v + 1} for i, v in enumerate(vals)]
    protocol = {"mode": mode, "image_size": size, "precision": precision}
    if mode != "linear":
        protocol["epochs"] = epochs or 10
    (d / "results.json").write_text(json.dumps({
        "format": "kdep-cache/transfer", "student": {"label": label},
        "dataset": {"path": f"/data/{dataset}", "fingerprint": dataset * 8},
        "protocol": protocol, "seeds": seeds, "summary": {}}))
    return d


def _warnings(stderr: str) -> list[str]:
    # off a terminal a log line starts with its date and time (progress.log_format)
    return [ln for ln in stderr.splitlines() if re.match(r"(\S+ \S+ )?WARNING ", ln)]


def test_unfinished_folder_is_named_and_the_rest_tabulated(tmp_path):
    done = [result(tmp_path / "a", "kdep", "cifar", [70.0]),
            result(tmp_path / "b", "random", "cifar", [40.0])]
    (tmp_path / "c").mkdir()  # a transfer still running (or failed): no results.json
    res = run_cli("compare", *done, tmp_path / "c")
    assert res.returncode == 0, res.stderr
    assert "kdep" in res.stdout and "random" in res.stdout and "70.00" in res.stdout
    w = _warnings(res.stderr)
    assert len(w) == 1 and "not in the table (1 of 3" in w[0] and str(tmp_path / "c") in w[0]
    only = run_cli("compare", tmp_path / "c")  # nothing finished: the one-line refusal
    assert only.returncode == 2 and "no results.json" in only.stderr


def test_settings_shown_and_like_with_like_warnings(tmp_path):
    fair = [result(tmp_path / "k", "kdep", "cifar", [70.0]),
            result(tmp_path / "r", "random", "cifar", [40.0])]
    t = cmp.build_table([str(d) for d in fair])
    assert t.notes == [] and t.settings == ["cifar: linear, 32 px, fp32"]
    assert "measured at: cifar: linear, 32 px, fp32" in cmp.format_text(t)
    res = run_cli("compare", *fair)
    assert res.returncode == 0 and _warnings(res.stderr) == [], res.stderr
    assert "measured at: cifar: linear, 32 px, fp32" in res.stdout

    # the random student probed at the data's size in fp32, the trained one at its own in bf16
    unfair = [result(tmp_path / "k2", "kdep", "cifar", [70.0], size=64, precision="bf16"),
              result(tmp_path / "r2", "random", "cifar", [40.0])]
    t = cmp.build_table([str(d) for d in unfair])
    assert len(t.notes) == 1
    assert "input size (kdep: 64, random: 32)" in t.notes[0]
    assert "precision (kdep: bf16, random: fp32)" in t.notes[0]
    res = run_cli("compare", *unfair)
    assert res.returncode == 0 and len(_warnings(res.stderr)) == 1, res.stderr

    epochs = [result(tmp_path / "k3", "kdep", "cifar", [70.0], mode="finetune", epochs=10),
              result(tmp_path / "r3", "random", "cifar", [40.0], mode="finetune", epochs=30)]
    assert "epochs (kdep: 10, random: 30)" in cmp.build_table([str(d) for d in epochs]).notes[0]


def test_modes_side_by_side_are_fine_but_one_probe_against_one_finetune_warns(tmp_path):
    quick = [result(tmp_path / "kl", "kdep", "cifar", [70.0]),
             result(tmp_path / "rl", "random", "cifar", [40.0]),
             result(tmp_path / "kf", "kdep", "cifar", [75.0], mode="finetune"),
             result(tmp_path / "rf", "random", "cifar", [50.0], mode="finetune")]
    t = cmp.build_table([str(d) for d in quick])  # the quickstart's table
    assert t.notes == [] and t.rows == ["kdep [linear]", "random [linear]", "kdep [finetune]",
                                        "random [finetune]"]
    assert t.settings == ["cifar: linear, 32 px, fp32; finetune, 32 px, fp32, 10 epochs"]
    t = cmp.build_table([str(d) for d in (quick[0], quick[3])])
    assert len(t.notes) == 1 and "modes differ (kdep [linear]: linear, random [finetune]: " \
        "finetune)" in t.notes[0]


def test_results_without_recorded_settings_still_compare(tmp_path):
    d = result(tmp_path / "old", "kdep", "cifar", [70.0])
    doc = json.loads((d / "results.json").read_text())
    doc["protocol"] = {"mode": "linear"}  # an older results.json
    (d / "results.json").write_text(json.dumps(doc))
    t = cmp.build_table([str(d)])
    assert t.cells["kdep", "cifar"].text() == "70.00" and t.settings == [
        "cifar: linear, ? px, precision ?"]


@pytest.mark.parametrize("args", [["compare", "/nonexistent/x"], ["compare", "--help"]])
def test_compare_refusals_import_no_torch(args):
    run_cli(*args)


@pytest.mark.slow  # three linear probes
def test_readme_pair_compares_like_with_like_only_with_one_image_size(tmp_path):
    """#24.6, the decision: a random:NAME student has no pre-training size, so it probes at the
    data's median size while a trained student uses its own; the summary shows both and compare
    warns. The README's pairs pass the same --image-size to both, which compare accepts."""
    import numpy as np
    from PIL import Image
    from test_transfer import fake_run

    from kdep_cache.transfer.run import TransferConfig, transfer
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("test", 2)):
        for c in "ab":
            (tmp_path / "ds" / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(
                    tmp_path / "ds" / split / c / f"{i}.png")
    run = fake_run(tmp_path)  # its sidecar: pre-trained at 32 px
    common = dict(data=str(tmp_path / "ds"), seeds=(0,), workers=0, device="cpu")
    s = transfer(TransferConfig(str(run), out=str(tmp_path / "t"), **common))
    r = transfer(TransferConfig("random:resnet18", out=str(tmp_path / "r"), **common))
    assert s["measured at"].startswith("32 px") and r["measured at"].startswith("48 px")
    assert "input size (run: 32, random:resnet18: 48)" in cmp.build_table(
        [str(tmp_path / "t"), str(tmp_path / "r")]).notes[0]
    r = transfer(TransferConfig("random:resnet18", out=str(tmp_path / "r32"), image_size=32,
                                **common))
    assert r["measured at"] == s["measured at"]
    assert cmp.build_table([str(tmp_path / "t"), str(tmp_path / "r32")]).notes == []
