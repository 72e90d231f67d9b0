"""#23.11: a command whose --out holds another stage's artifacts is refused before anything
is written (extract into a student run, train-student into a raw cache, ...): every pair."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner
from conftest import HERE, extract_cfg

from kdep_cache.checks.stages import own_out, stages_in
from kdep_cache.cli import main
from kdep_cache.diagnose.report import diagnose
from kdep_cache.extract.run import extract
from kdep_cache.fit.run import FitConfig, fit_svd
from kdep_cache.train.student import TrainConfig, train_student

STAGES = ("extract", "fit-svd", "train-student", "transfer", "diagnose")


@pytest.fixture(scope="module")
def outs(tmp_path_factory, teacher_file):
    """One real output folder of each stage (transfer's: its results.json and a seed folder)."""
    d = tmp_path_factory.mktemp("stages")
    shutil.copytree(HERE / "data" / "cifar", d / "images")
    extract(extract_cfg(d / "images", d / "extract", teacher_file, views=1))
    fit_svd(FitConfig(str(d / "extract"), str(d / "fit-svd"), dim=8))
    train_student(TrainConfig(student="resnet18", out=str(d / "train-student"),
                              cache=str(d / "extract"), objective="conv1x1-pre", epochs=1,
                              batch_size=4, workers=0, device="cpu", precision="fp32"))
    (d / "transfer" / "seed-0").mkdir(parents=True)
    (d / "transfer" / "results.json").write_text(json.dumps({"format": "kdep-cache/transfer"}))
    diagnose(d / "extract", d / "diagnose", tsne_points=0, plots=False)
    return d


def _args(stage: str, d, teacher_file: str, out) -> list[str]:
    return [str(a) for a in {
        "extract": ["extract", "--data", d / "images", "--teacher", "resnet18",
                    "--teacher-weights", teacher_file, "--views", 1, "--image-size", 32,
                    "--workers", 0, "--device", "cpu"],
        "fit-svd": ["fit-svd", "--cache", d / "extract", "--dim", 8],
        "train-student": ["train-student", "--student", "resnet18", "--cache", d / "extract",
                          "--objective", "conv1x1-pre", "--epochs", 1, "--workers", 0],
        "transfer": ["transfer", "--student", d / "train-student", "--data", d / "images",
                     "--workers", 0, "--device", "cpu"],
        "diagnose": ["diagnose", d / "extract", "--no-plots", "--tsne-points", 0],
    }[stage] + ["--out", out]]


def test_each_stage_output_is_recognised(outs):
    for stage in STAGES:
        assert set(stages_in(outs / stage)) == {stage}, stage
        own_out("out", outs / stage, stage)  # its own stage may rerun / resume there


PAIRS = [(cmd, there) for cmd in STAGES for there in STAGES if cmd != there]


@pytest.mark.parametrize("cmd,there", PAIRS, ids=[f"{c}-into-{t}" for c, t in PAIRS])
def test_out_of_another_stage_is_refused_and_left_untouched(outs, teacher_file, cmd, there):
    before = sorted(p.relative_to(outs / there) for p in (outs / there).rglob("*"))
    r = CliRunner().invoke(main, _args(cmd, outs, teacher_file, outs / there))
    lines = r.output.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1, r.output
    assert f"holds a `kdep-cache {there}` output" in lines[0] and "new --out" in lines[0]
    assert sorted(p.relative_to(outs / there) for p in (outs / there).rglob("*")) == before
