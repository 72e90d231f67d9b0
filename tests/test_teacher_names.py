"""An unknown teacher name is refused before torch is imported, with "did you mean" (#24.7)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kdep_cache import checks
from kdep_cache.errors import InputError
from kdep_cache.names import LITE_TEACHERS, TV_TEACHERS

_RUN = ("import sys\nfrom kdep_cache.cli import main\ntry:\n    main(sys.argv[1:])\nfinally:\n"
        "    print('IMPORTED', sorted({'torch', 'torchvision'} & set(sys.modules)), "
        "file=sys.stderr)\n")


def test_static_teacher_list_is_torchvisions():
    from kdep_cache.models.registry import _tv_names
    assert list(TV_TEACHERS) == _tv_names()


def test_unknown_teacher_refused_without_torch(tmp_path, images):
    res = subprocess.run([sys.executable, "-c", _RUN, "extract", "--data", str(images),
                          "--teacher", "resnet-18", "--out", str(tmp_path / "c")],
                         capture_output=True, text=True, timeout=120)
    lines = [ln for ln in res.stderr.splitlines() if not ln.startswith("IMPORTED")]
    assert res.returncode == 2 and len(lines) == 1, res.stderr
    assert "unknown teacher 'resnet-18'; did you mean resnet18" in lines[0]
    assert "IMPORTED []" in res.stderr  # refused before torch / torchvision were imported
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("spec", [*TV_TEACHERS, *LITE_TEACHERS, "EfficientNet_Lite0",
                                  "timm:whatever", "hf:dir", "teacher.pt", "some/file"])
def test_known_forms_pass_the_name_check(spec):
    checks.teacher_name(spec)


def test_library_refusal_also_suggests():
    from kdep_cache.models import load_teacher
    with pytest.raises(InputError, match="did you mean efficientnet-lite0"):
        load_teacher("efficientnet-lit0")
    with pytest.raises(InputError, match="did you mean wide_resnet50_2"):
        checks.teacher_name("wide_resnet50")
