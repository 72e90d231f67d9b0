"""A Hugging Face folder whose config names its own code (``auto_map``) is refused before any of
that code can run, even when the user would answer the prompt with yes (#23.1)."""

from __future__ import annotations

import builtins
import json
import shutil

import pytest
from ecosystem_models import hf_folder

from kdep_cache.errors import InputError
from kdep_cache.models import load_teacher

pytest.importorskip("transformers")


def _custom_folder(tmp_path, model_type: str):
    """A tiny dinov2 folder whose config.json adds ``auto_map`` to a python file that writes a
    marker file when it is imported (i.e. when the folder's code runs)."""
    _, d = hf_folder("dinov2", tmp_path / "src")
    custom = tmp_path / f"custom-{model_type}"
    shutil.copytree(d, custom)
    marker = tmp_path / f"RAN-{model_type}"
    (custom / "evil_code.py").write_text(
        f"open({str(marker)!r}, 'w').write('the folder code ran')\n"
        "from transformers import Dinov2Config, Dinov2Model\n"
        f"class EvilConfig(Dinov2Config):\n    model_type = {model_type!r}\n"
        "class EvilModel(Dinov2Model):\n    config_class = EvilConfig\n")
    cfg = json.loads((custom / "config.json").read_text())
    cfg.update(model_type=model_type, auto_map={"AutoConfig": "evil_code.EvilConfig",
                                                "AutoModel": "evil_code.EvilModel"})
    (custom / "config.json").write_text(json.dumps(cfg))
    return custom, marker


@pytest.mark.parametrize("model_type", ["kdep_evil", "dinov2"])
def test_folder_with_custom_code_is_refused_and_its_code_never_runs(tmp_path, monkeypatch,
                                                                    model_type):
    custom, marker = _custom_folder(tmp_path, model_type)
    # a user piping `yes |` into the command: every prompt is answered "y"
    monkeypatch.setattr(builtins, "input", lambda *a, **k: "y")
    with pytest.raises(Exception) as e:
        load_teacher(f"hf:{custom}")
    assert not marker.exists(), "the folder's own code was executed"
    assert e.type is InputError and "custom code (auto_map)" in str(e.value)
    assert "never runs" in str(e.value) and "\n" not in str(e.value)


def test_cli_refuses_custom_code_folder_in_one_line(tmp_path, images):
    from click.testing import CliRunner

    from kdep_cache.cli import main
    custom, marker = _custom_folder(tmp_path, "kdep_evil")
    r = CliRunner().invoke(main, ["extract", "--data", str(images), "--teacher", f"hf:{custom}",
                                  "--out", str(tmp_path / "c")], input="y\n" * 20)
    assert r.exit_code != 0 and "auto_map" in r.output, r.output
    assert r.output.strip().count("\n") == 0 and "Traceback" not in r.output
    assert not marker.exists()
