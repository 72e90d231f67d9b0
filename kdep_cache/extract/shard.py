"""One shard of stage 1: the teacher over K views of images ``lo..hi`` -> the shard's arrays.

The CPU part of each view runs in the loader workers (uint8); the device part runs on the whole
batch (in the workers when the teacher is on the CPU, on the teacher's device otherwise); the
teacher runs in fixed-size zero-padded chunks, so the features do not depend on
``--batch-size``. With ``--pack`` the views are rendered from the packed bytes and those bytes
are stored too; with ``--layers`` the stage maps come along (:mod:`.maps`).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..cache.schema import PACK, PACK_OFFSETS
from ..errors import InputError
from ..names import RENDER_GPU
from ..runtime.device import autocast
from ..storage.digest import SHA_BYTES
from ..views.augment import PARAM_FIELDS
from ..views.datasets import Collate, ViewDataset, collate, worker_init
from ..views.nvjpeg import GpuItems, collate_bytes, render_batch
from ..views.photometric import finish
from ..views.readers import PackingReader
from . import maps as layer_maps
from .packing import PackShard

log = logging.getLogger("kdep_cache.extract.run")  # the messages users know


@torch.no_grad()
def extract_shard(cfg, images, teacher, device, precision, mean, std, lo, hi, bar, pack):
    K, n = cfg.views, hi - lo
    reader = PackingReader(images, pack, cfg.augment.background) if pack.enabled else None
    # the CPU part in the workers (uint8); the device part on the whole batch: in the workers
    # when the teacher runs on the CPU, on the teacher's device after the copy otherwise
    on_cpu = device.type == "cpu"
    gpu = cfg.augment.render == RENDER_GPU
    ds = (GpuItems(images, np.arange(lo, hi), range(K), cfg.augment, cfg.seed, reader) if gpu
          else ViewDataset(images, np.arange(lo, hi), range(K), cfg.image_size, mean, std,
                           spec=cfg.augment, seed=cfg.seed, finish=False, reader=reader))
    blobs = PackShard(n) if pack.enabled else None
    loader = DataLoader(ds, batch_size=cfg.batch_size, num_workers=cfg.workers,
                        collate_fn=collate_bytes if gpu else
                        Collate((mean, std)) if on_cpu else collate,
                        worker_init_fn=worker_init, pin_memory=not on_cpu)
    dt = np.float16 if cfg.dtype == "float16" else np.float32
    feats = np.zeros((K, n, teacher.dim), dtype=dt)
    params = np.zeros((K, n, len(PARAM_FIELDS)), dtype=np.float64)
    valid = np.zeros(n, dtype=np.uint8)
    file_size = np.full(n, -1, dtype=np.int64)
    file_sha = np.zeros((n, SHA_BYTES), dtype=np.uint8)
    logits = np.zeros((K, n, teacher.num_classes), dtype=dt) if cfg.save_logits else None
    post = np.zeros((K, n, teacher.dim), dtype=dt) if cfg.save_post else None
    lmaps = layer_maps.MapArrays(cfg, n, dt)
    skipped = []
    for batch in loader:
        ids, x, p, ok, reasons = batch.ids, batch.views, batch.params, batch.ok, batch.reasons
        if gpu:  # nvJPEG decode + crop/resize/flip on the device; a file it fails is skipped
            x = render_batch(x, p, cfg.image_size, device).mark(ok, reasons)
        local = (ids - lo).numpy()
        file_size[local], file_sha[local] = batch.file_size.numpy(), batch.file_sha256.numpy()
        if blobs is not None:
            blobs.add(local, batch.packed, ok.tolist())
        for i, good, why in zip(ids.tolist(), ok.tolist(), reasons):
            if not good:
                log.warning("skipping %s: %s", images.paths[i], why)
                skipped.append({"id": i, "path": images.paths[i], "reason": why})
        b = len(ids)
        x = x.reshape(b * K, *x.shape[2:])
        if x.dtype == torch.uint8:
            x = finish(x.to(device, non_blocking=True), p.reshape(b * K, -1), mean, std)
        o = _forward_chunks(teacher, x, cfg, device, precision)
        f = o["pre"].float().reshape(b, K, -1).transpose(0, 1).cpu().numpy()
        good = ok.numpy()
        feats[:, local] = np.where(good[None, :, None], f, 0).astype(dt)
        params[:, local] = p.transpose(0, 1).numpy()
        valid[local] = good
        for name, store in (("logits", logits), ("post", post)):
            if store is not None:
                v = o[name].reshape(b, K, -1).transpose(0, 1).cpu().numpy()
                store[:, local] = np.where(good[None, :, None], v, 0).astype(dt)
        lmaps.fill(o, local, good)
        bar.update(b)
    if not np.all(np.isfinite(feats[:, valid.astype(bool)])):  # fp16 overflow or bad weights
        raise InputError(f"teacher produced non-finite features in images {lo}..{hi}: "
                         "check the weights and --precision")
    arrays = {"features": feats, "params": params, "valid": valid, "file_size": file_size,
              "file_sha256": file_sha}
    if logits is not None:
        arrays["logits"] = logits
    if post is not None:
        arrays["post"] = post
    arrays.update(lmaps.checked(valid, lo, hi))
    if blobs is not None:
        arrays[PACK], arrays[PACK_OFFSETS] = blobs.arrays()
    return arrays, skipped, blobs.stats() if blobs is not None else None


def _forward_chunks(teacher, x, cfg, device, precision) -> dict:
    """Teacher outputs for ``x`` computed in fixed-size, zero-padded chunks."""
    outs, pooled = {"pre": [], "post": [], "logits": []}, {}
    n = x.shape[0]
    for lo in range(0, n, cfg.chunk):
        part = x[lo:lo + cfg.chunk]
        if part.shape[0] < cfg.chunk:
            part = torch.cat([part, part.new_zeros(cfg.chunk - part.shape[0], *part.shape[1:])])
        part = part.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            o = teacher(part, want_logits=cfg.save_logits, want_post=cfg.save_post)
        for k in outs:
            if o[k] is not None:
                outs[k].append(o[k].float()[: min(cfg.chunk, n - lo)])
        layer_maps.keep(pooled, o, cfg.grid, min(cfg.chunk, n - lo))
    return {**{k: torch.cat(v) if v else None for k, v in outs.items()},
            **layer_maps.joined(pooled)}
