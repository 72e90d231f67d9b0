"""Builders of tiny real segmentation / detection sets (VOC and COCO layouts) from the 12
CIFAR-10 JPEGs in tests/data/cifar, via pipelines/dense_proxy.py: cat and ship photos
(ship named 'boat', its VOC class) pasted at exact, known boxes onto up-scaled crops of the
same real photos."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from click.testing import CliRunner

import kdep_cache.cli.transfer  # noqa: F401  (registers transfer/compare)
from kdep_cache.cli import main

HERE = Path(__file__).parent
_spec = importlib.util.spec_from_file_location("dense_proxy",
                                               HERE.parent / "pipelines" / "dense_proxy.py")
dense_proxy = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dense_proxy)


def sources() -> tuple[dict, list[Path]]:
    cifar = HERE / "data" / "cifar"
    objects = {"cat": sorted((cifar / "cat").iterdir()), "boat": sorted((cifar / "ship").iterdir())}
    return objects, sorted(objects["cat"] + objects["boat"])


def make_dense(root: Path, layout: str, n_train: int = 6, n_val: int = 3, seed: int = 0,
               category_ids=(17, 9)) -> tuple[Path, dict]:
    """The set in ``root`` and its ground truth ``{split: [{file, size, objects}]}``; COCO
    category ids are deliberately not 1..K (cat=17, boat=9: sorted by id, boat comes first)."""
    objects, backgrounds = sources()
    truth = dense_proxy.build(objects, backgrounds, root, layout, n_train, n_val, seed,
                              category_ids=category_ids)
    return root, truth


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(res, needle: str) -> None:
    """Non-zero exit and exactly one stderr line, ``error: ...`` containing ``needle``."""
    assert res.exit_code != 0, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert needle in lines[0], lines[0]
