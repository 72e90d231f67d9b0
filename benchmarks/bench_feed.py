"""Does replay feed a GPU? CPU cost per replayed view before / after the split, and (--gpu)
the student's cached training rate against its compute-only ceiling.

(a) CPU, default. CPU milliseconds (``time.thread_time``, one torch thread: the machine is
shared) per replayed view at 224 and 112 px on large real photos, split into decode /
crop+resize / photometric:
  - before = today's method (``full-decode/1``): full PIL decode per view, crop+resize+flip,
    per-image float32 jitter + PCA lighting + normalization on the CPU;
  - after = ``jpeg-draft/1``: JPEG DCT-domain draft decode at the largest 1/2, 1/4, 1/8 that
    keeps the crop >= the output size, crop+resize+flip to uint8; the photometric part runs
    on the training device (0 CPU ms with CUDA), or batched on the CPU (counted apart).
  The photos: Debian's ``mate-backgrounds`` (16 JPEG photos, 1280x1024 to 5640x3172;
  ``gnome-backgrounds`` ships only WebP/SVG):

    apt-get install -y mate-backgrounds      # -> /usr/share/backgrounds/mate/**/*.jpg
    .venv/bin/python benchmarks/bench_feed.py [--photos DIR] [--views 8] [--rounds 3]

(b) --gpu (CUDA; NOT run on the CPU machine; benchmarks/gpu_check.sh runs it): a cache of the
photos (hard links, --images of them) from a random-init ResNet-50 teacher (fp16) at 224 px,
then img/s of cached KDEP ResNet-18 and MobileNetV2 (the real feed) against the same
model + objective in the same loop on a synthetic batch already on the device
(``gpu.cached_over_compute``), and online KD (ResNet-50 teacher, fp16) vs cached, img/s.

    .venv/bin/python benchmarks/bench_feed.py --gpu --out $OUT/feed-gpu.json
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, Session, add_quiet_args  # noqa: E402

from kdep_cache.views.augment import AugmentSpec, crop_resize, draft_factor, sample_params  # noqa: E402
from kdep_cache.views.images import load_rgb  # noqa: E402
from kdep_cache.views.photometric import finish  # noqa: E402

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
PHOTOS = "/usr/share/backgrounds/mate"


def photos(d: str) -> list[str]:
    out = sorted(glob.glob(os.path.join(d, "**", "*.jpg"), recursive=True))
    if not out:
        raise SystemExit(f"no JPEG photos under {d}: apt-get install -y mate-backgrounds")
    return out


def _ms(fn, *a, **kw):
    t = time.thread_time()
    r = fn(*a, **kw)
    return r, (time.thread_time() - t) * 1e3


def cpu_part(files: list[str], size: int, views: int, rounds: int) -> dict:
    spec, rows, ratios, prog = AugmentSpec(), [], [], []
    for rnd in range(rounds):
        for i, f in enumerate(files):
            w, h = load_rgb(f).size
            with Image.open(f) as im:
                progressive = bool(im.info.get("progressive") or im.info.get("progression"))
            ps = [sample_params(spec, rnd, v, i, h, w) for v in range(views)]
            for p in ps:
                img, dec0 = _ms(load_rgb, f)
                u8, crop0 = _ms(crop_resize, img, p, size)
                _, pho0 = _ms(finish, u8[None], p[None], MEAN, STD)
                r = draft_factor(p, size)
                img_r, dec1 = _ms(load_rgb, f, draft=r)
                _, crop1 = _ms(crop_resize, img_r, p, size, r)
                rows.append((dec0, crop0, pho0, dec1, crop1))
                ratios.append(r)
                prog.append(progressive)
    u8s = torch.zeros(64, 3, size, size, dtype=torch.uint8).random_(0, 256)
    ps = np.stack([sample_params(spec, 0, v, 0, 2000, 3000) for v in range(64)])
    pho_batched = min(_ms(finish, u8s, ps, MEAN, STD)[1] for _ in range(3)) / 64  # CPU device
    a = np.array(rows)
    med = {k: float(np.median(a[:, j])) for j, k in enumerate(
        ("decode", "crop_resize", "photometric", "draft_decode", "draft_crop_resize"))}
    before = med["decode"] + med["crop_resize"] + med["photometric"]
    after_cuda = med["draft_decode"] + med["draft_crop_resize"]
    prog = np.array(prog)

    def means(sel):  # mean CPU ms per view (what a loader's throughput is made of)
        b0, b1 = a[sel, :3].sum(1).mean(), a[sel, 3:].sum(1).mean()
        return {"views": int(sel.sum()), "before": round(float(b0), 2),
                "after_cuda": round(float(b1), 2), "speedup_cuda": round(float(b0 / b1), 2)}
    return {"size": size, "views_measured": len(rows),
            "before_ms": {"decode": round(med["decode"], 2),
                          "crop_resize": round(med["crop_resize"], 2),
                          "photometric": round(med["photometric"], 2), "total": round(before, 2)},
            "after_ms": {"decode": round(med["draft_decode"], 2),
                         "crop_resize": round(med["draft_crop_resize"], 2),
                         "photometric_on_cuda": 0.0,
                         "photometric_if_cpu_batched": round(pho_batched, 2),
                         "total_cuda": round(after_cuda, 2),
                         "total_cpu_device": round(after_cuda + pho_batched, 2)},
            "speedup_cuda": round(before / after_cuda, 2),
            "speedup_cpu_device": round(before / (after_cuda + pho_batched), 2),
            "mean_ms": {"all": means(np.ones(len(a), bool)), "baseline_jpeg": means(~prog),
                        "progressive_jpeg": means(prog)},
            "draft_factors": {str(r): int(np.sum(np.array(ratios) == r)) for r in (1, 2, 4, 8)},
            "note": "before_ms/after_ms: medians over views of CPU ms (thread_time, one torch "
                    "thread); mean_ms: means per view, split by JPEG kind (a progressive "
                    "JPEG's entropy decoding is not reduced by the draft)"}


def _resized(f: str, d: Path, side: int) -> str:
    d.mkdir(parents=True, exist_ok=True)
    out = d / Path(f).name
    if not out.exists():
        im = Image.open(f).convert("RGB")
        im.thumbnail((side, side), Image.BICUBIC)
        im.save(out, quality=90)
    return str(out)


def _synthetic(d: Path) -> list[str]:
    """16 smooth-noise 2560x1600 JPEGs, where no photo package is installed."""
    d.mkdir(parents=True, exist_ok=True)
    rng, out = np.random.default_rng(0), []
    for n in range(16):
        small = rng.integers(0, 255, (25, 40, 3), dtype=np.uint8)
        path = d / f"synthetic-{n:02d}.jpg"
        Image.fromarray(small).resize((2560, 1600), Image.BICUBIC).save(path, quality=90)
        out.append(str(path))
    return out


def gpu_part(args) -> dict:
    """Cached KDEP vs compute-only vs online KD on one CUDA device (see the module doc)."""
    import tempfile

    import torchvision

    from kdep_cache.extract.run import ExtractConfig, extract
    from kdep_cache.fit.run import FitConfig, fit_svd
    from kdep_cache.runtime.device import default_precision, prepare_model
    from kdep_cache.train.loop import Schedule, sgd, train
    from kdep_cache.train.objectives import KDEP
    from kdep_cache.train.student import TrainConfig, _build, train_student
    dev = torch.device(args.device)
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-feed-"))
    files = photos(args.photos) if Path(args.photos).is_dir() else _synthetic(work / "synth")
    if args.photo_side:  # ImageNet-size photos (the published decode rates are for those)
        files = [_resized(f, work / "src", args.photo_side) for f in files]
    img_dir = work / "images" / "photos"
    img_dir.mkdir(parents=True, exist_ok=True)
    for n in range(args.images):  # hard links: real photos, no copies
        dst = img_dir / f"{n:05d}.jpg"
        if not dst.exists():
            os.link(files[n % len(files)], dst)
    weights = work / "r50.pth"
    torch.save(torchvision.models.resnet50().state_dict(), weights)
    t0 = time.perf_counter()
    extract(ExtractConfig(data=str(work / "images"), teacher="resnet50",
                          teacher_weights=str(weights), out=str(work / "cache"), views=2,
                          image_size=args.size, batch_size=64, workers=args.workers,
                          device=args.device, precision="fp16" if dev.type == "cuda" else "fp32"))
    res = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else str(dev),
           "images": args.images, "size": args.size, "batch": args.batch,
           "photos": args.photos if Path(args.photos).is_dir() else "synthetic",
           "photo_side": args.photo_side, "cpu_count": os.cpu_count(),
           "extract_s": round(time.perf_counter() - t0, 1), "students": {}}
    for name, dim in (("resnet18", 512), ("mobilenet_v2", 1280)):
        tdir = work / f"targets-{dim}"
        if not tdir.exists():
            fit_svd(FitConfig(str(work / "cache"), str(tdir), dim=dim, fit_views="all"))
        cfg = TrainConfig(student=name, out=str(work / f"run-{name}"), targets=str(tdir),
                          epochs=args.epochs, batch_size=args.batch, workers=args.workers,
                          device=args.device, lr=0.1)
        cached = train_student(cfg)["images_per_s"]
        src, net, _ = _build(cfg)
        net = prepare_model(net, dev)
        obj = KDEP(3.0).to(dev)
        x = torch.randn(args.batch, 3, args.size, args.size, device=dev)
        t = torch.randn(args.batch, dim, device=dev)
        synthetic = [(x, t)] * max(1, args.images // args.batch)
        hist = train(net, obj, lambda e, b=synthetic: b, sgd(net.parameters(), 0.1, 0.9, 5e-4),
                     Schedule(args.epochs, 0.1), Path(tempfile.mkdtemp(dir=work)), {}, dev,
                     default_precision(dev, args.size))
        compute = hist[-1]["images_per_s"]
        res["students"][name] = {"cached_img_s": cached, "compute_only_img_s": compute,
                                 "cached_over_compute": round(cached / compute, 3)}
    online = train_student(TrainConfig(student="resnet18", out=str(work / "run-online"),
                                       targets=str(work / "targets-512"), objective="online",
                                       epochs=args.epochs, batch_size=args.batch,
                                       workers=args.workers, device=args.device, lr=0.1))
    res["online_kd_r50_fp16_img_s"] = online["images_per_s"]
    res["cached_kd_r18_img_s"] = res["students"]["resnet18"]["cached_img_s"]
    res["cached_over_compute"] = min(s["cached_over_compute"] for s in res["students"].values())
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", default=PHOTOS)
    ap.add_argument("--views", type=int, default=4, help="views per photo per round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--gpu", action="store_true", help="part (b) instead (CUDA)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--images", type=int, default=2048)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=2, help="img/s of the last epoch is kept")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--photo-side", type=int, default=500,
                    help="--gpu: photos re-encoded at this longest side (0: as they are)")
    ap.add_argument("--work", default=None, help="scratch folder (default: a temp dir)")
    ap.add_argument("--out", default=None)
    add_quiet_args(ap)
    args = ap.parse_args()
    sess = Session(args)
    if args.gpu:
        out = Path(args.out or Path(os.environ.get("OUT", ".")) / "feed-gpu.json")
        res = {"command": " ".join(sys.argv), "gpu": gpu_part(args)}
    else:
        torch.set_num_threads(1)
        out = Path(args.out or ROOT / "benchmarks" / "results" / "feed.json")
        files = photos(args.photos)
        res = {"command": " ".join(sys.argv), "photos": {"source": "Debian mate-backgrounds",
               "dir": args.photos, "n": len(files)},
               "cpu": {str(s): cpu_part(files, s, args.views, args.rounds) for s in (224, 112)},
               "gpu": "not run here (no GPU lent): benchmarks/gpu_check.sh runs --gpu"}
    res.update(sess.record([]))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps({k: v for k, v in res.items() if k in ("cpu", "gpu")}, indent=1))


if __name__ == "__main__":
    main()
