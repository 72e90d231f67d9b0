"""A tiny real segmentation / detection set in PASCAL VOC or COCO layout: real CIFAR-10 objects
(whole 32x32 test photos, resized) pasted at known, non-overlapping boxes onto real
backgrounds (up-scaled crops of test photos of the other classes). Boxes and masks are exact by construction: the
pasted rectangle is the object (mask = its class; VOC masks also get the 1-pixel 255 ring
VOC draws around objects). A small proxy for VOC / COCO, nothing more.

    python pipelines/dense_proxy.py --cifar10 DIR --out OUT --layout voc|coco
        [--classes cat,ship,...] [--train 200 --val 100] [--seed 0]

Class names: VOC names where CIFAR-10 has them (ship -> boat, airplane -> aeroplane,
automobile -> car); a VOC tree gets ``classes.txt`` when some name is not a VOC class.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

VOC_NAME = {"ship": "boat", "airplane": "aeroplane", "automobile": "car"}
SIZES = ((64, 48), (48, 64), (64, 64), (72, 56))
IGNORE = 255


def _palette() -> list[int]:
    """The PASCAL VOC colour map (bit-interleaved), 256 entries."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


def _layout_objects(rng: random.Random, w: int, h: int, n: int) -> list[tuple[int, ...]]:
    """Up to ``n`` non-overlapping boxes (x, y, bw, bh), 2 px apart, inside the image."""
    boxes: list[tuple[int, ...]] = []
    for _ in range(50 * n):
        if len(boxes) == n:
            break
        bw = rng.randint(16, min(30, w - 4))
        bh = max(12, min(h - 4, bw + rng.randint(-4, 4)))
        x, y = rng.randint(1, w - bw - 1), rng.randint(1, h - bh - 1)
        if all(x + bw + 2 <= a or a + c + 2 <= x or y + bh + 2 <= b or b + d + 2 <= y
               for a, b, c, d in boxes):
            boxes.append((x, y, bw, bh))
    return boxes


def compose(rng: random.Random, objects: dict[str, list[Path]], backgrounds: list[Path],
            index: dict[str, int]):
    """One image: (PIL RGB image, uint8 mask of ``index`` values, [(name, x, y, w, h)])."""
    w, h = rng.choice(SIZES)
    with Image.open(rng.choice(backgrounds)) as bg:
        bg = bg.convert("RGB")
        cw, ch = rng.randint(12, 20), rng.randint(12, 20)
        cx, cy = rng.randint(0, bg.width - cw), rng.randint(0, bg.height - ch)
        img = bg.crop((cx, cy, cx + cw, cy + ch)).resize((w, h), Image.BILINEAR)
    mask = np.zeros((h, w), np.uint8)
    objs = []
    for x, y, bw, bh in _layout_objects(rng, w, h, rng.randint(1, 2)):
        name = rng.choice(list(index))
        with Image.open(rng.choice(objects[name])) as ob:
            img.paste(ob.convert("RGB").resize((bw, bh), Image.BILINEAR), (x, y))
        mask[max(0, y - 1):y + bh + 1, max(0, x - 1):x + bw + 1] = IGNORE  # VOC's ring
        objs.append((name, x, y, bw, bh))
    for name, x, y, bw, bh in objs:
        mask[y:y + bh, x:x + bw] = index[name]
    return img, mask, objs


def _voc_xml(stem: str, w: int, h: int, objs) -> str:
    parts = [f"<annotation><filename>{stem}.jpg</filename><size><width>{w}</width>"
             f"<height>{h}</height><depth>3</depth></size>"]
    for name, x, y, bw, bh in objs:  # VOC: 1-based, inclusive pixel coordinates
        parts.append(f"<object><name>{name}</name><difficult>0</difficult><bndbox>"
                     f"<xmin>{x + 1}</xmin><ymin>{y + 1}</ymin><xmax>{x + bw}</xmax>"
                     f"<ymax>{y + bh}</ymax></bndbox></object>")
    return "".join(parts) + "</annotation>\n"


def build(objects: dict[str, list[Path]], backgrounds: list[Path], out: Path, layout: str,
          n_train: int = 8, n_val: int = 4, seed: int = 0, category_ids=None) -> dict:
    """Write the set into ``out`` (replaced); returns ``{split: [{file, size, objects}]}``."""
    from kdep_cache.transfer.dense.layouts import VOC_CLASSES
    rng = random.Random(seed)
    classes = list(objects)
    ids = list(category_ids or range(1, len(classes) + 1))
    voc = set(classes) <= set(VOC_CLASSES)  # else a classes.txt gives the order
    index = {c: (VOC_CLASSES.index(c) if voc else classes.index(c)) + 1 for c in classes}
    tmp = out.parent / f".tmp-{out.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    truth: dict[str, list] = {}
    k = 0
    for split, n in (("train", n_train), ("val", n_val)):
        truth[split], coco_images, coco_anns = [], [], []
        for i in range(n):
            img, mask, objs = compose(rng, objects, backgrounds, index)
            stem = f"{split}_{i:04d}"
            w, h = img.size
            if layout == "voc":
                for d in ("JPEGImages", "SegmentationClass", "Annotations"):
                    (tmp / d).mkdir(parents=True, exist_ok=True)
                img.save(tmp / "JPEGImages" / f"{stem}.jpg", quality=95)
                m = Image.fromarray(mask, "P")
                m.putpalette(_palette())
                m.save(tmp / "SegmentationClass" / f"{stem}.png")
                (tmp / "Annotations" / f"{stem}.xml").write_text(_voc_xml(stem, w, h, objs))
            else:
                (tmp / "images" / split).mkdir(parents=True, exist_ok=True)
                img.save(tmp / "images" / split / f"{stem}.jpg", quality=95)
                coco_images.append({"id": i + 1, "file_name": f"{stem}.jpg", "width": w,
                                    "height": h})
                for name, x, y, bw, bh in objs:
                    k += 1
                    coco_anns.append({
                        "id": k, "image_id": i + 1, "category_id": ids[classes.index(name)],
                        "bbox": [x, y, bw, bh], "area": bw * bh, "iscrowd": 0,
                        "segmentation": [[x, y, x + bw, y, x + bw, y + bh, x, y + bh]]})
            truth[split].append({"file": stem, "size": [w, h], "objects": objs})
        if layout == "voc":
            for sets in ("Segmentation", "Main"):
                (tmp / "ImageSets" / sets).mkdir(parents=True, exist_ok=True)
                (tmp / "ImageSets" / sets / f"{split}.txt").write_text(
                    "".join(f"{t['file']}\n" for t in truth[split]))
        else:
            (tmp / "annotations").mkdir(parents=True, exist_ok=True)
            cats = [{"id": c, "name": n, "supercategory": "x"} for c, n in zip(ids, classes)]
            (tmp / "annotations" / f"instances_{split}.json").write_text(json.dumps(
                {"images": coco_images, "annotations": coco_anns, "categories": cats}))
    if layout == "voc" and not voc:
        (tmp / "classes.txt").write_text("".join(f"{c}\n" for c in classes))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return truth


def from_cifar(cifar: Path, classes: list[str]) -> tuple[dict, list[Path]]:
    """Objects from CIFAR-10 test/CLASS/, backgrounds from test/ photos of the other classes:
    never CIFAR-10 train images, from which repro-small draws its pre-training set D_u."""
    missing = [c for c in classes if not (cifar / "test" / c).is_dir()]
    if missing:
        raise SystemExit(f"dense_proxy: {cifar}/test has no class folder {missing[0]}")
    objects = {VOC_NAME.get(c, c): sorted((cifar / "test" / c).iterdir())[:500]
               for c in classes}
    backgrounds = sorted(p for d in sorted((cifar / "test").iterdir()) if d.name not in classes
                         for p in sorted(d.iterdir())[:100])
    if not backgrounds or not all(objects.values()):
        raise SystemExit(f"dense_proxy: {cifar}/test has too few images")
    return objects, backgrounds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cifar10", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--layout", choices=["voc", "coco"], required=True)
    ap.add_argument("--classes", default="cat,ship,airplane,automobile")
    ap.add_argument("--train", type=int, default=200)
    ap.add_argument("--val", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if (a.out / ("JPEGImages" if a.layout == "voc" else "annotations")).is_dir():
        print(f"dense_proxy: {a.out} exists (kept)")
        return
    objects, backgrounds = from_cifar(a.cifar10, a.classes.split(","))
    truth = build(objects, backgrounds, a.out, a.layout, a.train, a.val, a.seed)
    print(f"dense_proxy: {a.out}: {a.layout}, {len(objects)} classes, "
          f"{len(truth['train'])} train / {len(truth['val'])} val images")


if __name__ == "__main__":
    main()
