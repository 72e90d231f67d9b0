"""Segmentation / detection datasets in the two standard layouts, detected automatically.

- PASCAL VOC (a ``VOCdevkit/VOC2012``-like folder): ``JPEGImages/ID.jpg``;
  ``SegmentationClass/ID.png`` (class-index PNGs, 255 = ignore) with
  ``ImageSets/Segmentation/{train,val}.txt`` for segmentation; ``Annotations/ID.xml`` with
  ``ImageSets/Main/{train,val}.txt`` for detection. Classes: ``classes.txt`` (one name a line,
  background excluded, index 1..K in that order) if present, else the 20 VOC classes.
- COCO instances: ``annotations/instances_{train,val}[2017].json`` and the images in
  ``images/{split}[2017]/``, ``{split}[2017]/`` or ``images/``. Classes: the categories sorted
  by id (index 1..K); segmentation masks are rendered from the polygons / RLE.
Boxes are 0-based ``[x1, y1, x2, y2]`` (VOC's 1-based ``xmin``/``ymin`` minus 1). Bad input
raises a one-line :class:`InputError`: no masks, a class name not in the list, an empty split,
a box outside its image.
"""

from __future__ import annotations

import hashlib
import logging
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from ...errors import InputError
from ...names import TRANSFER_TASKS
from ...storage.fsio import read_json

log = logging.getLogger(__name__)
VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
               "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
               "sheep", "sofa", "train", "tvmonitor")
TASKS = TRANSFER_TASKS[1:]  # the dense tasks
SPLITS = ("train", "val")
BOX_SLACK = 1.0  # pixels a box may overhang its image (rounding in real annotations)


@dataclass
class Sample:
    """One image with its annotations (paths relative to the dataset root)."""

    id: int
    image: str
    width: int
    height: int
    boxes: list = field(default_factory=list)    # [[x1, y1, x2, y2], ...] 0-based
    labels: list = field(default_factory=list)   # 1-based class indices
    ignore: list = field(default_factory=list)   # VOC difficult / COCO iscrowd
    mask: str | None = None                      # VOC class-index PNG
    polygons: list | None = None                 # COCO [(label, segmentation, iscrowd)]


@dataclass
class DenseData:
    path: str
    layout: str
    task: str
    classes: list[str]                           # without background
    train: list[Sample]
    val: list[Sample]
    split: dict

    @property
    def fingerprint(self) -> str:
        lines = sorted(f"{s}\t{x.image}" for s, xs in (("train", self.train), ("test", self.val))
                       for x in xs)
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()

    @property
    def test(self) -> list[Sample]:
        return self.val

    def test_files(self) -> list[str]:
        return [str(Path(self.path) / s.image) for s in self.val]

    def to_json(self) -> dict:
        return {"path": self.path, "layout": self.layout, "task": self.task,
                "fingerprint": self.fingerprint, "n_classes": len(self.classes),
                "classes": self.classes, "split": self.split, "n_train": len(self.train),
                "n_test": len(self.val),
                "n_boxes": {s: sum(len(x.boxes) for x in xs)
                            for s, xs in (("train", self.train), ("test", self.val))}}


def open_dense(path: str, task: str) -> DenseData:
    """Detect the layout of ``path`` and read both splits for ``task``."""
    if task not in TASKS:
        raise InputError(f"--task must be classification, {' or '.join(TASKS)}, got {task!r}")
    root = Path(path)
    if not root.is_dir():
        raise InputError(f"--data {path} does not exist or is not a directory")
    root = root.resolve()
    if (root / "JPEGImages").is_dir():
        classes, splits = _voc(root, task)
        layout = "voc"
    elif _coco_json(root, "train") is not None:
        classes, splits = _coco(root, task)
        layout = "coco"
    else:
        raise InputError(f"--data {path} is neither a PASCAL VOC folder (JPEGImages/, "
                         "ImageSets/...) nor a COCO folder (annotations/instances_train.json)")
    return DenseData(str(root), layout, task, classes, splits["train"], splits["val"],
                     {"kind": layout, "train": "train", "test": "val"})


def _check_box(where: str, box, name: str, w: int, h: int) -> None:
    x1, y1, x2, y2 = box
    if x1 < -BOX_SLACK or y1 < -BOX_SLACK or x2 > w + BOX_SLACK or y2 > h + BOX_SLACK:
        raise InputError(f"{where}: the box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) of {name!r} lies "
                         f"outside its {w}x{h} image")


def _ids(file: Path, rel: str) -> list[str]:
    if not file.is_file():
        raise InputError(f"VOC folder has no {rel} (the list of the split's image ids)")
    ids = [ln.split()[0] for ln in file.read_text().splitlines() if ln.strip()]
    if not ids:
        raise InputError(f"{rel} lists no images: the split is empty")
    return ids


def _voc(root: Path, task: str) -> tuple[list[str], dict]:
    cfile = root / "classes.txt"
    classes = ([c.strip() for c in cfile.read_text().splitlines() if c.strip()]
               if cfile.is_file() else list(VOC_CLASSES))
    index = {c: i + 1 for i, c in enumerate(classes)}
    sets = "Segmentation" if task == "segmentation" else "Main"
    if task == "segmentation" and not (root / "SegmentationClass").is_dir():
        raise InputError(f"{root} has no SegmentationClass/ folder: no masks for segmentation")
    splits, k = {}, 0
    for split in SPLITS:
        rel = f"ImageSets/{sets}/{split}.txt"
        out = []
        for i in _ids(root / rel, rel):
            k += 1
            img = f"JPEGImages/{i}.jpg"
            if not (root / img).is_file():
                raise InputError(f"{rel} lists {i}, but {img} does not exist")
            if task == "segmentation":
                mask = f"SegmentationClass/{i}.png"
                if not (root / mask).is_file():
                    raise InputError(f"{i} has no mask {mask}: no masks for segmentation")
                with Image.open(root / img) as im, Image.open(root / mask) as m:
                    if im.size != m.size:
                        raise InputError(f"{mask} is {m.size[0]}x{m.size[1]} but its image is "
                                         f"{im.size[0]}x{im.size[1]}")
                    out.append(Sample(k, img, im.size[0], im.size[1], mask=mask))
            else:
                out.append(_voc_boxes(root, i, k, img, index))
        splits[split] = out
    return classes, splits


def _voc_boxes(root: Path, i: str, k: int, img: str, index: dict) -> Sample:
    rel = f"Annotations/{i}.xml"
    if not (root / rel).is_file():
        raise InputError(f"{i} has no {rel}: no boxes for detection")
    try:
        doc = ET.parse(root / rel).getroot()
        w, h = int(doc.findtext("size/width")), int(doc.findtext("size/height"))
    except (ET.ParseError, TypeError, ValueError):
        raise InputError(f"{rel} is not a VOC annotation (XML with size/width, size/height)"
                         ) from None
    s = Sample(k, img, w, h)
    for obj in doc.iter("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in index:
            raise InputError(f"{rel}: class name {name!r} is not in the class list "
                             f"({', '.join(list(index)[:5])}, ...); put the names in "
                             "classes.txt at the dataset root")
        bb = obj.find("bndbox")
        try:
            box = [float(bb.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax")]
        except (AttributeError, TypeError, ValueError):
            raise InputError(f"{rel}: an object {name!r} has no numeric bndbox") from None
        box[0], box[1] = box[0] - 1, box[1] - 1  # VOC pixels are 1-based
        _check_box(rel, box, name, w, h)
        s.boxes.append(box)
        s.labels.append(index[name])
        s.ignore.append(obj.findtext("difficult", "0").strip() == "1")
    return s


def _coco_json(root: Path, split: str) -> Path | None:
    for name in (f"instances_{split}.json", f"instances_{split}2017.json"):
        if (root / "annotations" / name).is_file():
            return root / "annotations" / name
    return None


def _coco(root: Path, task: str) -> tuple[list[str], dict]:
    splits, classes = {}, None
    for split in SPLITS:
        jf = _coco_json(root, split)
        if jf is None:
            raise InputError(f"COCO folder {root} has no annotations/instances_{split}.json")
        doc = read_json(jf)
        cats = sorted(doc.get("categories") or [], key=lambda c: c["id"])
        names = [c["name"] for c in cats]
        if classes is not None and names != classes:
            raise InputError(f"{jf.name}: its categories differ from the train split's")
        classes, index = names, {c["id"]: j + 1 for j, c in enumerate(cats)}
        images = doc.get("images") or []
        if not images:
            raise InputError(f"{jf.name} holds no images: the {split} split is empty")
        folder = _coco_images(root, split, images[0]["file_name"])
        by_id = {}
        for im in images:
            by_id[im["id"]] = Sample(im["id"], f"{folder}{im['file_name']}", int(im["width"]),
                                     int(im["height"]),
                                     polygons=[] if task == "segmentation" else None)
        skipped = 0
        for a in doc.get("annotations") or []:
            s = by_id.get(a.get("image_id"))
            if s is None:
                raise InputError(f"{jf.name}: annotation {a.get('id')} names image "
                                 f"{a.get('image_id')}, which is not in its images")
            if a.get("category_id") not in index:
                raise InputError(f"{jf.name}: annotation {a.get('id')} has category_id "
                                 f"{a.get('category_id')}, not in the categories list")
            x, y, w, h = (float(v) for v in a["bbox"])
            name = classes[index[a["category_id"]] - 1]
            _check_box(f"{jf.name} annotation {a.get('id')} ({s.image})", [x, y, x + w, y + h],
                       name, s.width, s.height)
            if task == "segmentation":
                if not a.get("segmentation"):
                    raise InputError(f"{jf.name}: annotation {a.get('id')} ({s.image}) has no "
                                     "segmentation: no masks for segmentation")
                s.polygons.append((index[a["category_id"]], a["segmentation"],
                                   int(a.get("iscrowd", 0))))
            elif w <= 0 or h <= 0:
                skipped += 1
            else:
                s.boxes.append([x, y, x + w, y + h])
                s.labels.append(index[a["category_id"]])
                s.ignore.append(bool(a.get("iscrowd", 0)))
        if skipped:
            log.warning("%s: skipped %d boxes of zero width or height", jf.name, skipped)
        splits[split] = list(by_id.values())
    return classes, splits


def _coco_images(root: Path, split: str, first: str) -> str:
    for rel in (f"images/{split}", f"images/{split}2017", f"{split}2017", split, "images"):
        if (root / rel / first).is_file():
            return f"{rel}/"
    raise InputError(f"COCO {split} image {first} is in none of images/{split}/, "
                     f"{split}2017/, {split}/, images/ under {root}")
