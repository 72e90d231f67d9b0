"""Stage 1: run the teacher once over K replayable views per image; write a raw cache.

Output directory: ``images.json`` (the image list), ``config.json`` (settings that define
the content), ``shard-NNNNN.h5`` (features (K,n,D), params (K,n,P), valid (n,), optional
logits (K,n,C)) and ``manifest.json`` written last. Rerunning the same command resumes
from the last complete shard; other settings are refused with the differing keys named.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..cache.identity import ARRAYS as IDENTITY
from ..cache.identity import check_finished_shards, record_in_images_json
from ..cache.manifest import (
    finalize_store,
    load_or_init_config,
    record_shard,
    shard_done,
    shard_entry,
)
from ..cache.schema import CONFIG, IMAGES, MANIFEST, PACK, PACK_OFFSETS, RAW, shard_name
from ..cache.store import write_shard
from ..checks import MAX_FILE_MB, check_options
from ..checks.multilayer import DEFAULT_GRID
from ..errors import InputError
from ..models import load_teacher
from ..names import DEFAULT_PACK, RENDER_GPU, STORAGE_DTYPES
from ..runtime import dist
from ..runtime.device import autocast, prepare_model, resolve_device, resolved_precision
from ..runtime.progress import Progress
from ..storage.fsio import forget_on_failure, rank_lock, read_json
from ..views.augment import PARAM_FIELDS, AugmentSpec
from ..views.files import composited_line
from ..views.images import ImageList, count_composited, scan_images
from ..views.nvjpeg import require_cuda
from ..views.pack import PackSpec
from . import maps as layer_maps
from .packing import pack_line, pack_totals
from .shard import extract_shard

log = logging.getLogger(__name__)
DEFAULT_IMAGE_SIZE = 224  # the paper's; used when the teacher's checkpoint names no size


@dataclass(frozen=True)  # resolved values are derived with dataclasses.replace
class ExtractConfig:
    data: str
    teacher: str
    out: str
    teacher_weights: str | None = None
    views: int = 4                 # K cached views per image (Beyer et al.: more is better)
    image_size: int | None = None  # teacher input size: the checkpoint's own, else 224 (paper)
    seed: int = 0
    batch_size: int = 64           # images per loader batch (x K views per teacher pass)
    workers: int = 2
    device: str = "auto"
    precision: str = "auto"        # fp32 on CPU, fp16 autocast on CUDA
    fraction: float | None = None  # class-balanced subset (paper: 10% = 128/class)
    file_list: str | None = None
    dtype: str = "float16"         # storage dtype of the features
    save_logits: bool = False
    save_post: bool = False        # also cache pooled post-activation features (conv1x1-post)
    norm: str | None = None        # input normalization preset (default: the teacher's own)
    teacher_feature: str | None = None  # ViT teachers: cls (default) or mean-patch
    shard_size: int = 1024         # images per shard
    chunk: int = 64                # views per teacher forward, fixed (padded) so results do not
                                   # depend on --batch-size (CPU kernels block by batch shape)
    augment: AugmentSpec = field(default_factory=AugmentSpec)
    decode: str = "cpu"            # gpu: nvJPEG on CUDA (its own render method, recorded)
    rank: int = 0                  # this process writes shards s with s % world_size == rank
    world_size: int = 1
    max_file_mb: float = MAX_FILE_MB  # larger files are skipped unread (not a content setting)
    pack: str = DEFAULT_PACK       # none | original | jpeg:SIDE[:QUALITY]: store the images too
    layers: tuple[str, ...] | None = None  # teacher stages whose G x G maps are cached too
    grid: int = DEFAULT_GRID       # 2: README "Multi-layer KD" (bytes per view per layer)


def _validate(cfg: ExtractConfig) -> None:
    check_options({k: v for k, v in cfg.__dict__.items() if k != "augment"})
    check_options({"crop_scale": cfg.augment.scale})
    if cfg.dtype not in STORAGE_DTYPES:
        raise InputError(f"--dtype must be one of {', '.join(STORAGE_DTYPES)}, got {cfg.dtype}")


def extract(cfg: ExtractConfig) -> dict:
    """Run stage 1; return a summary dict. Raises :class:`KdepError` on bad input.

    Under torchrun the ranks come from the environment: rank r writes shards s with
    s % world_size == r on its own device, and rank 0 writes the manifest after a barrier."""
    _validate(cfg)
    d = dist.context(cfg.device)
    if dist.env_ranks() is not None:
        if (cfg.rank, cfg.world_size) not in ((0, 1), (d.rank, d.world_size)):
            raise InputError(f"--rank {cfg.rank} --world-size {cfg.world_size} contradicts "
                             f"torchrun's RANK={d.rank} WORLD_SIZE={d.world_size}: give one")
        cfg = replace(cfg, rank=d.rank, world_size=d.world_size)
    images = scan_images(cfg.data, cfg.file_list, cfg.fraction, cfg.seed)
    images.max_bytes = int(cfg.max_file_mb * 2**20)
    teacher, tinfo = load_teacher(cfg.teacher, cfg.teacher_weights, cfg.norm,
                                  cfg.teacher_feature)
    if cfg.save_logits and not tinfo.num_classes:
        raise InputError(f"--save-logits: teacher {cfg.teacher} has no classifier to give logits")
    if cfg.image_size is None:  # timm pretrained_cfg / HF preprocessor_config, else 224
        cfg = replace(cfg, image_size=int(tinfo.input_size or DEFAULT_IMAGE_SIZE))
        check_options({k: getattr(cfg, k) for k in ("image_size", "views", "batch_size")})
    layer_maps.attach(cfg, teacher, tinfo)  # checked before any write; hooks add out["maps"]
    device = dist.rank_device(resolve_device(cfg.device))
    precision = resolved_precision(device, cfg.precision)
    if cfg.decode == "gpu":
        require_cuda(device)
        cfg = replace(cfg, augment=replace(cfg.augment, render=RENDER_GPU))
    autocast(device, precision)  # validates the combination before any work
    pack = PackSpec.parse(cfg.pack).resolved(cfg.image_size)
    if pack.mode == "jpeg" and pack.side < cfg.image_size:
        log.warning("--pack %s: images are stored at most %d px on their longer side, below the "
                    "extraction size %d: every view is upsampled (--pack original or jpeg:%d "
                    "keeps more)", pack, pack.side, cfg.image_size,
                    -(-cfg.image_size * 320 // 224))
    out = Path(cfg.out)
    settings = {"format": RAW, "teacher": tinfo.to_json(), "augment": cfg.augment.to_json(),
                "seed": cfg.seed, "views": cfg.views, "image_size": cfg.image_size,
                "dtype": cfg.dtype, "precision": precision, "save_logits": cfg.save_logits,
                "save_post": cfg.save_post,
                "shard_size": cfg.shard_size, "chunk": cfg.chunk, "images": images.fingerprint,
                "n_images": len(images), "fraction": cfg.fraction,
                "param_fields": list(PARAM_FIELDS), **layer_maps.settings(cfg, teacher),
                **({"pack": str(pack)} if pack.enabled else {})}  # absent: caches before it
    with (rank_lock(out, cfg.rank, cfg.world_size),  # a failure before the first shard:
          forget_on_failure(out, (CONFIG, IMAGES), "shard-*.h5", cfg.world_size == 1)):
        load_or_init_config(out, settings, images.to_json())
        if (out / MANIFEST).is_file():
            log.info("%s is already complete", out)
            return {"out": str(out), "complete": True, "images": len(images), "seconds": 0.0,
                    "bytes_written": 0, "skipped": None, "resumed": True,
                    "note": "already complete"}
        teacher = prepare_model(teacher, device)
        mean, std = tinfo.mean_std
        n_shards = -(-len(images) // cfg.shard_size)
        mine = [s for s in range(n_shards) if s % cfg.world_size == cfg.rank]
        done = [s for s in mine if shard_done(out, s, *_range(s, cfg, len(images)))]
        check_finished_shards(out, images, done, cfg.seed)
        todo = [s for s in mine if s not in done]
        t0, written, done_imgs = time.perf_counter(), 0, 0
        bar = Progress(sum(_range(s, cfg, len(images))[1] - s * cfg.shard_size for s in todo),
                       "img", "extract", enabled=d.main)
        for n, s in enumerate(todo):
            lo, hi = _range(s, cfg, len(images))
            arrays, skipped, packed = extract_shard(cfg, images, teacher, device, precision,
                                                     mean, std, lo, hi, bar, pack)
            attrs = {**settings, "start": lo, "stop": hi, "skipped": skipped,
                     **({"pack_stats": packed} if packed else {})}
            entry = write_shard(out / shard_name(s), attrs, arrays)
            record_shard(out, s, entry, lo, hi, skipped)
            written += entry["bytes"]
            done_imgs += hi - lo
            rate = done_imgs / max(time.perf_counter() - t0, 1e-9)
            bar.line(f"shard {n + 1}/{len(todo)} (images {lo}..{hi}): {rate:.1f} img/s, "
                     f"{len(skipped)} skipped")
        bar.close()
        secs = time.perf_counter() - t0
        d.barrier("extract: waiting for every rank's shards")
        manifest = None
        if d.main or not d.enabled:  # torchrun: rank 0; separate ranks: the last to finish
            manifest = _finalize(out, settings, n_shards, cfg, tinfo.dim, images)
        d.barrier("extract: waiting for rank 0's manifest")
        if manifest is None and d.enabled:
            manifest = read_json(out / MANIFEST)
    summary = {"out": str(out), "complete": manifest is not None, "images": len(images),
               "images_processed": done_imgs, "views": cfg.views, "seconds": round(secs, 2),
               "images_per_s": round(done_imgs / secs, 2) if secs > 0 else None,
               "bytes_written": written, "device": str(device), "precision": precision,
               "skipped": len(manifest["skipped"]) if manifest else None,
               "ignored": images.scan_summary(),
               **({"transparent": composited_line(manifest["scan"])} if manifest else {}),
               **({"pack": pack_line(manifest["pack"])} if manifest and "pack" in manifest
                  else {})}
    return summary


def _finalize(out: Path, settings: dict, n_shards: int, cfg: ExtractConfig, dim: int,
              images: ImageList):
    if not all((out / shard_name(s)).is_file() for s in range(n_shards)):
        return None  # other ranks (started separately) are still writing theirs
    scan = images.scan_record()
    record_in_images_json(out, n_shards)
    skipped = [x["id"] for s in range(n_shards) for x in shard_entry(out, s).get("skipped", [])]
    scan = {**scan, "composited": count_composited(images, skipped),
            "background": list(cfg.augment.background)}  # #23.19: transparent images
    extra = {"dim": dim, "dtype": cfg.dtype, "scan": scan}
    if "pack" in settings:
        extra["pack"] = pack_totals(out, n_shards, settings["pack"])
    return finalize_store(out, settings, n_shards, arrays=_array_names(cfg), extra=extra)


def _range(s: int, cfg: ExtractConfig, n: int) -> tuple[int, int]:
    return s * cfg.shard_size, min(n, (s + 1) * cfg.shard_size)


def _array_names(cfg: ExtractConfig) -> list[str]:
    return (["features", "params", "valid", *IDENTITY] + (["logits"] if cfg.save_logits else [])
            + (["post"] if cfg.save_post else []) + layer_maps.names(cfg)
            + ([PACK, PACK_OFFSETS] if PackSpec.parse(cfg.pack).enabled else []))
