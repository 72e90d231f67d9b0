"""Which colour should transparent pixels get? (extract --background; the default is chosen here)

Two sets of real alpha images, each composited on black, white and gray (128):
- ``icons``: every RGBA PNG matplotlib ships in mpl-data/images (toolbar glyphs);
- ``cutouts``: photos of data/cifar10-mini/train cut out by a soft centred ellipse (about
  half of the area transparent), the shape of a product or segmentation cut-out set.
Measured on what the teacher sees: mean intensity (and the share below 40/255, the issue's
figure), RMS contrast, and the EfficientNet-Lite0 ImageNet teacher on the cut-outs: top-1
agreement with its reading of the uncut photo, cosine of its penultimate feature to the
uncut photo's, and its confidence. Writes benchmarks/results/background.json.

    .venv/bin/python benchmarks/bench_background.py [--images 200] [--size 96]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, environment, pick_files  # noqa: E402

from kdep_cache.checks import BACKGROUNDS  # noqa: E402
from kdep_cache.views.decode import _to_rgb  # noqa: E402


def icons() -> list[Image.Image]:
    import matplotlib
    d = Path(matplotlib.get_data_path()) / "images"
    out = []
    for p in sorted(d.glob("*.png")):
        im = Image.open(p)
        if im.mode in ("RGBA", "LA", "P"):
            out.append(im.convert("RGBA"))
    return out


def cutouts(n: int) -> tuple[list[Image.Image], list[Image.Image]]:
    data = ROOT / "data" / "cifar10-mini" / "train"
    photos = [Image.open(data / p).convert("RGB") for p in pick_files(data, n)]
    w, h = photos[0].size
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.sqrt(((xx - (w - 1) / 2) / (0.40 * w)) ** 2 + ((yy - (h - 1) / 2) / (0.40 * h)) ** 2)
    alpha = (np.clip((1.15 - r) / 0.3, 0, 1) * 255).astype(np.uint8)  # soft edge
    cuts = []
    for im in photos:
        a = np.dstack([np.asarray(im), alpha])
        cuts.append(Image.fromarray(a, "RGBA"))
    return photos, cuts


def stats(ims: list[Image.Image]) -> dict:
    g = [np.asarray(im.convert("L"), dtype=np.float64) / 255 for im in ims]
    means = np.array([x.mean() for x in g])
    return {"mean_intensity": round(float(means.mean()), 4),
            "share_mean_below_40_255": round(float((means < 40 / 255).mean()), 4),
            "rms_contrast": round(float(np.mean([x.std() for x in g])), 4)}


@torch.no_grad()
def teacher_view(ims, net, mean, std, size):
    x = torch.stack([torch.from_numpy(np.asarray(im.resize((size, size), Image.BILINEAR),
                                                 dtype=np.float32) / 255).permute(2, 0, 1)
                     for im in ims])
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    outs = [net(x[i:i + 50], want_logits=True) for i in range(0, len(x), 50)]
    return torch.cat([o["pre"] for o in outs]), torch.cat([o["logits"] for o in outs])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--size", type=int, default=96, help="teacher input size")
    args = ap.parse_args()
    t0, load0 = time.perf_counter(), os.getloadavg()
    from kdep_cache.models import load_teacher
    from kdep_cache.models.registry import NORMALIZATIONS
    net, info = load_teacher("efficientnet-lite0")
    mean, std = NORMALIZATIONS[info.norm]
    photos, cuts = cutouts(args.images)
    ref_f, ref_l = teacher_view(photos, net, mean, std, args.size)
    ref_top = ref_l.argmax(1)
    res = {"icons": {}, "cutouts": {}}
    ic = icons()
    for name, rgb in BACKGROUNDS.items():
        res["icons"][name] = stats([_to_rgb(im, rgb) for im in ic])
        comp = [_to_rgb(im, rgb) for im in cuts]
        f, lg = teacher_view(comp, net, mean, std, args.size)
        p = lg.softmax(1)
        res["cutouts"][name] = {
            **stats(comp),
            "teacher_top1_agreement_with_uncut": round(float((lg.argmax(1) == ref_top)
                                                             .float().mean()), 4),
            "teacher_feature_cosine_to_uncut": round(float(torch.nn.functional.cosine_similarity(
                f, ref_f).mean()), 4),
            "teacher_confidence": round(float(p.max(1).values.mean()), 4)}
    res["uncut_photos"] = stats(photos)
    doc = {"command": " ".join([Path(sys.executable).name, *sys.argv]),
           "settings": {"images": args.images, "size": args.size, "icons": len(ic),
                        "teacher": info.name, "backgrounds": BACKGROUNDS},
           "results": res, "seconds": round(time.perf_counter() - t0, 1),
           "load_average_at_start": list(load0), "load_average_at_end": list(os.getloadavg()),
           "environment": environment()}
    out = ROOT / "benchmarks" / "results" / "background.json"
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
