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
