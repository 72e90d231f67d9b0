"""Issue 24: every `kdep-cache` command of the README's small-folder recipe (the ResNet-18
block and the MobileNetV2 block) parses with the CLI as printed: no unknown option, no missing
value, each subcommand exists. (What the commands compute is tested elsewhere.)"""

import re
import shlex
from pathlib import Path

import click
import pytest

import kdep_cache.cli.transfer  # noqa: F401  (registers transfer/compare)
from kdep_cache.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "### Your own small folder"


def _commands() -> list[str]:
    text = README.read_text()
    start = text.index(SECTION)
    section = text[start:text.index("\n### ", start + len(SECTION))]
    cmds = []
    for block in re.findall(r"```bash\n(.*?)```", section, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line.startswith("kdep-cache "):
                cmds.append(line)
    return cmds


def test_the_recipe_has_both_students():
    cmds = _commands()
    assert any("--student resnet18" in c and c.startswith("kdep-cache train-student") for c in cmds)
    assert any("fit-svd" in c and "--student mobilenet_v2" in c and "--null zero" in c
               for c in cmds)
    assert any("--student mobilenet_v2" in c and c.startswith("kdep-cache train-student")
               for c in cmds)


@pytest.mark.parametrize("line", _commands())
def test_each_recipe_command_parses(line):
    subst = {"$D": "/data/mine", "$S": "64", "$who": "runs/r18", "${who}": "runs/r18",
             "$n": "r18"}
    for k, v in subst.items():
        line = line.replace(k, v)
    assert "$" not in line, line
    args = shlex.split(line)[1:]
    cmd = main.get_command(click.Context(main), args[0])
    assert cmd is not None, f"no subcommand {args[0]}"
    with cmd.make_context(args[0], args[1:]) as ctx:  # raises UsageError on a bad option
        assert ctx.params
