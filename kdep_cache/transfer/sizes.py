"""The default input size S when neither ``--image-size`` nor the student's sidecar gives one:
taken from the data instead of a fixed 224.

Rule: the median of one side over the train images (the shorter side for classification and
segmentation crops, the longer side for detection, whose images are letterboxed to S), rounded
to the nearest multiple of 8 (every network here downsamples by powers of 2) and clamped to a
task range: classification [32, 224] (224 is the paper's size; small images are not
upsampled beyond it), segmentation [32, 512] (PSPNet crops 473 on VOC), detection [32, 800]
(torchvision's default shorter side). At most :data:`SAMPLE` images are read (evenly spaced),
headers only.
"""

from __future__ import annotations

import statistics

from PIL import Image

SAMPLE = 256
RANGES = {"classification": (32, 224), "segmentation": (32, 512), "detection": (32, 800)}


def size_from_sides(sides: list[int], task: str) -> int:
    lo, hi = RANGES[task]
    if not sides:
        return hi
    s = int(round(statistics.median(sides) / 8)) * 8
    return max(lo, min(hi, s))


def image_sides(files: list[str], longer: bool = False) -> list[int]:
    """Shorter (or longer) side of up to :data:`SAMPLE` of ``files``; unreadable ones skipped."""
    step = max(1, len(files) // SAMPLE)
    out = []
    for f in files[::step][:SAMPLE]:
        try:
            with Image.open(f) as im:
                out.append(max(im.size) if longer else min(im.size))
        except (OSError, ValueError):
            continue
    return out


def input_size(given: int | None, student_size: int | None, files: list[str], task: str
               ) -> tuple[int, str]:
    """S and where it came from: ``--image-size``, the student's sidecar (classification only;
    dense tasks use their own resolution), or the data."""
    if given:
        return given, "--image-size"
    if task == "classification" and student_size:
        return int(student_size), "student sidecar (pre-training size)"
    sides = image_sides(files, longer=task == "detection")
    side = "longer" if task == "detection" else "shorter"
    return size_from_sides(sides, task), f"data: median {side} side of {len(sides)} images"
