"""The repro-small study's plan (pipelines/repro_small.py + repro-small.json) is the one issue
14 asks for, and every row can run: a misspelt target folder or row label would only show
after an hour of CPU."""

import importlib.util
import json
from pathlib import Path

PIPE = Path(__file__).resolve().parents[1] / "pipelines"
_spec = importlib.util.spec_from_file_location("repro_small", PIPE / "repro_small.py")
repro = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(repro)
CONFIG = json.loads((PIPE / "repro-small.json").read_text())
KEY_ROWS = ("random init", "SP (supervised, same images)", "KDEP SVD+PTS (K=8)",
            "KDEP SVD+PTS, T=0.03", "SVD, no transform", "1x1 conv (pre-ReLU)", "logits KD")


def test_one_view_size_for_teacher_student_and_transfers():
    assert isinstance(CONFIG["image_size"], int)
    assert not {"teacher_size", "student_size", "linear_image_size"} & set(CONFIG)


def test_key_rows_have_two_seeds_and_the_confounded_row_is_gone():
    rows = {m["label"]: m for m in repro.methods(CONFIG)}
    for label in KEY_ROWS:
        assert len(set(rows[label]["seeds"])) >= 2, label
    assert not [k for k in rows if "loss weight" in k]
    assert all("loss_weight" not in (m["train"] or {}) for m in rows.values())


def test_every_row_names_a_fitted_projection_and_known_labels():
    fitted = {repro.target_name(*f) for f in repro.FITS_RUN}
    assert "targets-svd-pts-t0.03" in fitted and "targets-svd-pts" in fitted
    labels = set()
    for m in repro.methods(CONFIG):
        labels.add(m["label"])
        if m["train"] and "targets" in m["train"]:
            assert m["train"]["targets"] in fitted, m["label"]
    assert set(CONFIG["finetune_rows"]) <= labels
    assert set(repro.DENSE["rows"]) <= labels
    assert CONFIG["finetune_epochs"] >= 10


BUDGET = json.loads((PIPE / "repro-budget.json").read_text())


def test_the_budget_study_is_svd_vs_pts_at_1x_and_3x_on_the_same_recipe():
    rows = repro.selected(BUDGET)
    by = {(m["label"], m["factor"]): m for m in rows}
    for base in ("KDEP SVD+PTS (K=8)", "SVD, no transform"):
        one, three = by[(base, 1)], by[(f"{base} (3x steps)", 3)]
        assert one["train"] == three["train"] and len(set(three["seeds"])) >= 2
    assert [m["label"] for m in rows].count("random init") == 1  # no steps to scale
    # everything but the rows, the factors, the output and the dropped extras is the
    # same-size study's recipe, so its 1x rows are a rerun of that study's rows
    same = {"image_size", "views", "crop_scale", "student", "epochs", "batch_size", "lr",
            "loss_weight", "teacher", "du_per_class", "key_seeds"}
    assert {k: BUDGET[k] for k in same} == {k: CONFIG[k] for k in same}
    assert repro.selected(CONFIG) and all(m["factor"] == 1 for m in repro.selected(CONFIG))
    assert len(repro.selected(CONFIG)) == len(repro.methods(CONFIG))


ML = json.loads((PIPE / "repro-ml.json").read_text())


def test_the_ml_study_plan_runs_every_row_with_valid_stages(tmp_path, monkeypatch):
    """The multi-layer study (issue 27) through the runner with each stage recorded instead
    of run: one extract with the layers, one fit per student with its --match, 12 trainings
    (SVD+PTS / +ML / deepest-map-only x 2 students x 2 seeds), the probes and the dense rows;
    every --match names cached layers and real stages of its student, >= grid at 64 px."""
    from kdep_cache.models import FeatureNet, build_student
    from kdep_cache.models.taps import map_shapes, stage_ends
    calls = {k: [] for k in ("extract", "fit", "train", "transfer")}
    for name, key in (("extract", "extract"), ("fit_svd", "fit"), ("train_student", "train"),
                      ("transfer", "transfer")):
        monkeypatch.setattr(repro, name, lambda cfg, k=key: calls[k].append(cfg) or {})
    for name in ("_prepare", "_fit_quality", "_train_seconds"):
        monkeypatch.setattr(repro, name, lambda *a, **k: 0.0)
    repro.TIMES.clear()
    repro.run({**ML, "out": str(tmp_path)})
    (ext,) = calls["extract"]
    assert ext.layers == tuple(ML["layers"]) and ext.grid == 2 and ext.image_size == 64
    assert sorted(f.student for f in calls["fit"]) == ["mobilenet_v2", "resnet18"]
    assert len(calls["train"]) == 12 and len({t.out for t in calls["train"]}) == 12
    ml_runs = [t for t in calls["train"] if t.objective == "kdep-ml"]
    assert len(ml_runs) == 8 and sum(t.match is not None for t in ml_runs) == 4
    for fit in calls["fit"]:
        net = FeatureNet(build_student(fit.student))
        stages = stage_ends(net)
        pairs = dict(p.split(":") for p in fit.match.split(","))
        assert set(pairs) == set(ML["layers"]) and set(pairs.values()) <= set(stages)
        assert all(min(s[1:]) >= ML["grid"] for s in map_shapes(net, stages, 64).values())
    for t in ml_runs:
        if t.match:  # the spatial-only row: the deepest pair of its student's fit
            assert t.match == ML["ml"]["students"][t.student]["match"].split(",")[-1]
    lin = [t for t in calls["transfer"] if t.task == "classification"]
    assert len(lin) == 8 * 2 * 3  # 8 rows (4 per student) x 2 seeds x 3 sets
    dense = [t for t in calls["transfer"] if t.task != "classification"]
    assert {t.label for t in dense} == set(ML["dense"]["rows"]) and len(dense) == 8
