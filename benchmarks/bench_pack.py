"""Issue 26.5: what a pack (``extract --pack``) saves per replayed view, and what it costs.

The photos: ImageNet-size JPEGs built from Debian's ``mate-backgrounds`` (its 16 JPEG photos,
1280x1024 to 5640x3172): per photo, ``--per-photo`` random 4:3 sub-windows of 50-100 % of the
photo's largest 4:3 window, Lanczos-resized to 500x375, Gaussian noise sigma 6 added (sensor
grain: these wallpapers are smoother than camera photos and would compress to ~40 KB),
saved as baseline JPEG q95 (the mean size is in the JSON; real ImageNet averages ~110 KB).

Measured, interleaved by round (each round: every source once, in turn):
- CPU ms per replayed view (``time.thread_time`` of the loader's part: read the bytes, hash
  them where the folder is read, decode (JPEG draft where it applies) + crop + resize + flip
  to uint8, i.e. :func:`kdep_cache.views.datasets.render_views` with ``finish=False``: the
  colour work runs on the device) at 224 and 112 px, for the folder (first epoch: hashed;
  later epochs: stat-compared, issue 26.3) and the packs ``original``, ``jpeg:256``,
  ``jpeg:320``;
- per epoch: file opens and bytes read from the image folder, bytes read from the pack;
- pack size per image;
- quality: cosine between the EfficientNet-Lite0 (ImageNet) pooled feature of a 224-px view
  rendered from the packed image and of the same crop (the box scaled to the original's
  pixels) rendered from the original file.

    .venv/bin/python benchmarks/bench_pack.py --out benchmarks/results/pack.json
"""

from __future__ import annotations

import argparse
import glob
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kdep_cache.views.augment import AugmentSpec, crop_resize, sample_params  # noqa: E402
from kdep_cache.views.datasets import render_views  # noqa: E402
from kdep_cache.views.files import Blob  # noqa: E402
from kdep_cache.views.images import ImageList, load_rgb  # noqa: E402
from kdep_cache.views.pack import PackSpec  # noqa: E402
from kdep_cache.views.readers import FolderReader, Read, shared_known  # noqa: E402

PHOTOS = "/usr/share/backgrounds/mate"
PACKS = ("original", "jpeg:256", "jpeg:320")
BG = (128, 128, 128)


def build_photos(out: Path, per_photo: int, seed: int = 0) -> list[str]:
    srcs = sorted(glob.glob(os.path.join(PHOTOS, "**", "*.jpg"), recursive=True))
    if not srcs:
        raise SystemExit("no photos: apt-get install -y mate-backgrounds")
    rng, names = np.random.default_rng(seed), []
    out.mkdir(parents=True, exist_ok=True)
    for n, f in enumerate(srcs):
        im = Image.open(f).convert("RGB")
        W, H = im.size
        for k in range(per_photo):
            s = min(W * 3 / 4, H) * rng.uniform(0.5, 1.0)
            w, h = int(s * 4 / 3), int(s)
            x, y = int(rng.integers(0, W - w + 1)), int(rng.integers(0, H - h + 1))
            sub = im.crop((x, y, x + w, y + h)).resize((500, 375), Image.LANCZOS)
            a = np.asarray(sub, dtype=np.float64) + rng.normal(0, 6, (375, 500, 3))
            name = f"p{n:02d}-{k}.jpg"
            Image.fromarray(np.clip(a, 0, 255).round().astype(np.uint8)).save(
                out / name, "JPEG", quality=95)
            names.append(name)
    return names


class MemPack:
    """The packed bytes of every image, as a packed cache's store hands them to a reader;
    ``reencode``: every image re-encoded at the spec's quality, none kept (a reference)."""

    def __init__(self, images: ImageList, spec: PackSpec, reencode: bool = False):
        def one(p):
            src = Blob((Path(images.root) / p).read_bytes(), p)
            if not reencode:
                return spec.pack(src, BG).data
            buf = io.BytesIO()
            load_rgb(src, BG).save(buf, format="JPEG", quality=spec.quality)
            return buf.getvalue()
        self.blobs = [one(p) for p in images.paths]
        self.reads = 0

    def __call__(self, i: int) -> Read:
        from kdep_cache.views.readers import UNKNOWN
        data = self.blobs[i]
        self.reads += len(data)
        return Read(Blob(data, "x.jpg"), None, UNKNOWN)


def view_params(images: ImageList, reader, i: int, views: int, seed: int) -> np.ndarray:
    img = load_rgb(reader(i).src, BG)
    return np.stack([sample_params(AugmentSpec(), seed, v, i, img.size[1], img.size[0])
                     for v in range(views)])


def replay_ms(images, reader, params, size) -> tuple[float, int]:
    """One view per call, as train-student's loader renders them (an epoch = one view of
    every image): each view reads and decodes its image."""
    t = time.thread_time()
    for v in range(params.shape[1]):
        for i in range(len(images)):
            render_views(images, i, [v], size, None, None, AugmentSpec(), 0,
                         params[i, v:v + 1], finish=False, reader=reader)
    return (time.thread_time() - t) * 1e3, len(images) * params.shape[1]


class CountingFolder(FolderReader):
    def __init__(self, images, known=None):
        super().__init__(images, known)
        self.opens = self.bytes = 0

    def __call__(self, i):
        r = super().__call__(i)
        self.opens += 1
        self.bytes += r.ident.size if r.ident.size > 0 else 0
        return r


def quality(images, packs, views, seed) -> dict:
    """The teacher's pooled feature of a view of the packed image vs of the same box of the
    original: cosine, and cosine after centring on the mean feature of the original views
    (the raw features share a large mean, which makes every raw cosine look close to 1).
    A re-encode-only reference separates the generation loss from the resolution loss;
    ``two views of one image`` (views 0 and 1 of an original) gives the scale."""
    from kdep_cache.models import load_teacher
    from kdep_cache.views.photometric import finish
    teacher, info = load_teacher("efficientnet-lite0")
    teacher.eval()
    mean, std = info.mean_std

    def feats(x, ps):
        x = finish(torch.stack(x), torch.from_numpy(np.stack(ps)), mean, std)
        with torch.no_grad():
            return teacher(x)["pre"].float().numpy().astype(np.float64)

    pairs: dict = {}
    for name, pack in packs.items():
        a_all, b_all = [], []
        for i, rel in enumerate(images.paths):
            orig = load_rgb(Path(images.root) / rel, BG)
            packed = load_rgb(Blob(pack.blobs[i], "x.jpg"), BG)
            sx, sy = orig.size[0] / packed.size[0], orig.size[1] / packed.size[1]
            for v in range(views):
                p = sample_params(AugmentSpec(), seed, v, i, packed.size[1], packed.size[0])
                q = p.copy()  # the same box in the original's pixels
                q[0], q[1], q[2], q[3] = p[0] * sy, p[1] * sx, p[2] * sy, p[3] * sx
                q[4], q[5] = orig.size[1], orig.size[0]
                f = feats([_box_view(orig, q, 224), crop_resize(packed, p, 224)], [p, p])
                a_all.append(f[0])
                b_all.append(f[1])
        pairs[name] = (np.array(a_all), np.array(b_all))
    a_v, b_v = [], []
    for i, rel in enumerate(images.paths):
        orig = load_rgb(Path(images.root) / rel, BG)
        ps = [sample_params(AugmentSpec(), seed, v, i, orig.size[1], orig.size[0])
              for v in (0, 1)]
        f = feats([crop_resize(orig, p, 224) for p in ps], ps)
        a_v.append(f[0])
        b_v.append(f[1])
    pairs["two views of one image (scale)"] = (np.array(a_v), np.array(b_v))
    mu = np.concatenate([a for a, _ in pairs.values()]).mean(0)  # original views' mean

    def cos(a, b):
        return np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))

    out = {}
    for name, (a, b) in pairs.items():
        c, cc = cos(a, b), cos(a - mu, b - mu)
        out[name] = {"pairs": len(c), "cosine_mean": round(float(c.mean()), 4),
                     "centred_cosine_mean": round(float(cc.mean()), 4),
                     "centred_cosine_p05": round(float(np.percentile(cc, 5)), 4)}
    return out


def _box_view(img: Image.Image, q: np.ndarray, size: int) -> torch.Tensor:
    """crop_resize with a fractional box (crop_resize's box is integer pixels)."""
    top, left, ch, cw = (float(v) for v in q[0:4])
    out = img.resize((size, size), Image.BILINEAR, box=(left, top, left + cw, top + ch))
    if q[6] >= 0.5:
        out = out.transpose(Image.FLIP_LEFT_RIGHT)
    return torch.from_numpy(np.asarray(out, dtype=np.uint8).copy()).permute(2, 0, 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-photo", type=int, default=6)
    ap.add_argument("--views", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quality-views", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="kdep-pack-"))
    names = build_photos(work / "photos", args.per_photo)
    images = ImageList(str(work / "photos"), names, [-1] * len(names), [])
    sizes = [os.path.getsize(work / "photos" / n) for n in names]
    packs = {p: MemPack(images, PackSpec.parse(p)) for p in PACKS}
    res = {"command": " ".join(["benchmarks/bench_pack.py", *sys.argv[1:]]),
           "photos": {"n": len(names), "size": "500x375", "mean_kb": round(np.mean(sizes) / 1024, 1),
                      "min_kb": round(min(sizes) / 1024, 1), "max_kb": round(max(sizes) / 1024, 1),
                      "how": "mate-backgrounds sub-windows, Lanczos to 500x375, noise sigma 6, "
                             "baseline JPEG q95"},
           "pack_bytes_per_image": {p: round(float(np.mean([len(b) for b in m.blobs])), 1)
                                    for p, m in packs.items()},
           "views_per_image": args.views, "rounds": args.rounds, "torch_threads": 1}
    ms: dict = {}
    io_epoch: dict = {}
    for size in (224, 112):
        sources = {"folder (first epoch: hashed)": None, "folder (later epochs: stat)": None,
                   **{f"pack {p}": packs[p] for p in PACKS}}
        params = {}
        for name, pk in sources.items():
            rd = pk if pk is not None else FolderReader(images)
            params[name] = np.stack([view_params(images, rd, i, args.views, size)
                                     for i in range(len(images))])
        acc = {n: [] for n in sources}
        for _ in range(args.rounds):  # interleaved
            for name, pk in sources.items():
                if pk is not None:
                    rd = pk
                elif "stat" in name:  # every file already checked: stat-compared, not hashed
                    known = shared_known(len(images))
                    for i, n in enumerate(images.paths):
                        st = os.stat(Path(images.root) / n)
                        known[i] = torch.tensor([st.st_size, st.st_mtime_ns, st.st_ino])
                    rd = CountingFolder(images, known)
                else:
                    rd = CountingFolder(images)
                t, nv = replay_ms(images, rd, params[name], size)
                acc[name].append(t / nv)
                if size == 224:
                    io_epoch[name] = ({"folder_opens": rd.opens // args.views,
                                       "folder_bytes": rd.bytes // args.views,
                                       "pack_bytes": 0} if pk is None else
                                      {"folder_opens": 0, "folder_bytes": 0,
                                       "pack_bytes": sum(len(b) for b in pk.blobs)})
        ms[str(size)] = {n: {"median_ms": round(float(np.median(v)), 3),
                             "rounds_ms": [round(x, 3) for x in v],
                             "views_per_s_per_core": round(1e3 / float(np.median(v)))}
                         for n, v in acc.items()}
    res["cpu_ms_per_view"] = ms
    res["per_epoch_io_one_view_per_image"] = io_epoch
    res["note_io"] = ("one epoch replays one view per image: folder_opens = images, "
                      "folder_bytes = the files' bytes; a pack reads only the packed bytes "
                      "(memory-mapped) and opens no file of the folder")
    ref = {"re-encoded at q90, not resized (reference)": MemPack(
        images, PackSpec.parse("jpeg:500:90"), reencode=True)}
    res["quality_cosine_lite0_224px"] = quality(images, {**packs, **ref}, args.quality_views, 1)
    res["cpu"] = os.cpu_count()
    res["load_avg_at_end"] = os.getloadavg()[0]
    text = json.dumps(res, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
