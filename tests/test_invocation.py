"""Issue 24.1: a printed resume command runs as printed, whether or not the venv is active."""

import os
import subprocess
import sys

from kdep_cache.cli.base import runnable_prog


def _script(d):
    d.mkdir(parents=True, exist_ok=True)
    p = d / "kdep-cache"
    p.write_text("#!/bin/sh\n")
    p.chmod(0o755)
    return p


def test_bare_name_only_where_path_finds_the_running_script(tmp_path, monkeypatch):
    venv = _script(tmp_path / "venv" / "bin")
    other = _script(tmp_path / "other" / "bin")
    monkeypatch.setattr(sys, "argv", [str(venv), "extract"])
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # after `make`, venv not active
    assert runnable_prog() == [str(venv)]
    monkeypatch.setenv("PATH", f"{other.parent}:{venv.parent}")  # another install first
    assert runnable_prog() == [str(venv)]
    monkeypatch.setenv("PATH", f"{venv.parent}:/usr/bin")  # `. .venv/bin/activate`
    assert runnable_prog() == ["kdep-cache"]
    monkeypatch.chdir(venv.parent)  # started as ./kdep-cache: printed absolute
    monkeypatch.setattr(sys, "argv", ["./kdep-cache"])
    monkeypatch.setenv("PATH", "/usr/bin")
    assert runnable_prog() == [str(venv)]


def test_python_dash_m_form(tmp_path, monkeypatch):
    main_py = os.path.join(os.path.dirname(__import__("kdep_cache").__file__), "__main__.py")
    monkeypatch.setattr(sys, "argv", [main_py])
    assert runnable_prog() == [sys.executable, "-m", "kdep_cache"]
    r = subprocess.run([sys.executable, "-m", "kdep_cache", "--version"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("kdep-cache, version")
