"""``train-student``: build the student, the objective and the data; run the loop; save a
plain torchvision state_dict + a provenance sidecar."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..cache.schema import (
    CHECKPOINT,
    PROJECTION_FILE,
    SIDECAR,
    STUDENT,
    STUDENT_FILE,
    STUDENT_SAFETENSORS,
    now_iso,
    producer_info,
)
from ..cache.sidecar import SIDECAR_VERSION, check_finished_run, read_sidecar, student_fingerprint
from ..errors import InputError
from ..models import FeatureNet, build_student, save_safetensors
from ..runtime import dist
from ..runtime.cpu_share import apply_cpu_defaults
from ..runtime.device import default_precision, prepare_model, resolve_device
from ..storage.digest import weights_sha
from ..storage.fsio import atomic_write, write_json, writer_lock
from ..views.nvjpeg import check_decode
from .checkpoint import resume_state, settings_diffs, shared_start
from .feed import Feed
from .loop import RunContext, Schedule, mean_rate, sgd, train
from .objectives import (
    KDEP,
    NEEDS,
    OBJECTIVES,
    Conv1x1,
    LogitsKD,
    Online,
    Supervised,
    margins_from_features,
)
from .objectives_ml import build as build_ml
from .sources import Source, open_source
from .syncbn import sync_batchnorm

__all__ = ["TrainConfig", "size_warning", "train_student"]
log = logging.getLogger(__name__)
BASE_LR_512 = {"resnet": 0.3, "mobilenet": 0.1}  # paper recipe, at batch 512; others: 0.1
SIZE_RATIO_WARN = 1.5  # student / teacher input size beyond which train-student warns


@dataclass(frozen=True)  # resolved values are derived with dataclasses.replace
class TrainConfig:
    student: str
    out: str
    targets: str | None = None
    cache: str | None = None
    data: str | None = None
    objective: str = "kdep"
    epochs: int = 90
    batch_size: int = 256
    lr: float | None = None        # default: 0.3 (ResNet) / 0.1 (MobileNet) x batch / 512
    weight_decay: float = 5e-4
    momentum: float = 0.9
    schedule: str = "step"         # x0.1 every third of training (paper: 30/60 of 90)
    lr_step: float | None = None
    loss_weight: float = 3.0       # paper: 3.0 (MS-R50 teacher), 20.0 (supervised R50)
    temperature: float = 4.0       # logits-KD temperature
    image_size: int | None = None  # default: the extraction size
    workers: int | None = None     # default: 2 on CPU, cores // local GPUs - 1 (<= 16) on CUDA
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"        # bf16 autocast where the hardware has it, else fp32
    resume: bool = False
    teacher_weights: str | None = None  # online only: override the recorded weights path
    max_views: int | None = None   # cycle over views 0..k-1 of a K-view cache (K ablation)
    keep_checkpoint: bool = False  # checkpoint.pt is only needed to resume an unfinished run
    sync_bn: bool = False          # torchrun: BatchNorm statistics over the global batch
    decode: str | None = None      # cpu / gpu; default: how the cache's views were rendered
    compile: bool = False          # torch.compile the student (opt-in, unmeasured on GPU)
    match: str | None = None       # kdep-ml: teacher layer:student stage (default: fit-svd's)
    layer_weights: str | None = None  # kdep-ml: W or L:W,... (default 1 per layer)


def size_warning(src: Source) -> str | None:
    """One line when the student sees the views at another size than the teacher did."""
    if src.cache is None:
        return None
    t, s = int(src.cache.manifest["settings"]["image_size"]), int(src.image_size)
    if max(t, s) / min(t, s) <= SIZE_RATIO_WARN:
        return None
    return (f"the student trains at {s} px on views the teacher saw at {t} px: it cannot see "
            "what the teacher saw, and target directions it cannot recover from its input are "
            "wasted (measured: a 32-px ResNet-18 recovered no SVD direction past ~50 of a "
            f"128-px teacher); use --image-size {t} unless the mismatch is deliberate")


def train_student(cfg: TrainConfig) -> dict:
    """Train one student. Under torchrun: DistributedDataParallel, ``--batch-size`` is the
    global batch (each rank takes its slice of every global batch), and rank 0 alone writes."""
    _validate(cfg)
    d = dist.context(cfg.device)
    if d.world_size > 1 and cfg.batch_size < 2 * d.world_size:  # else every epoch is empty
        raise InputError(f"--batch-size {cfg.batch_size} is the global batch: on "
                         f"{d.world_size} ranks it must be at least {2 * d.world_size} (2 "
                         "images per rank; BatchNorm cannot train on one)")
    if cfg.sync_bn and not d.enabled and d.main:
        log.warning("--sync-bn does not apply to one process (its BatchNorm statistics are "
                    "already those of the whole batch); it takes effect under torchrun")
    torch.manual_seed(cfg.seed)
    src, net, n_classes = _build(cfg)
    objective = _objective(cfg, src, net)
    device = dist.rank_device(resolve_device(cfg.device))
    check_decode(cfg.decode, src.spec, device)
    precision = (default_precision(device, src.image_size) if cfg.precision == "auto"
                 else cfg.precision)
    lr = cfg.lr if cfg.lr is not None else BASE_LR_512.get(net.family, 0.1) * cfg.batch_size / 512
    schedule = Schedule(cfg.epochs, lr, cfg.schedule, cfg.lr_step)
    settings = _settings(cfg, src, lr, schedule, precision, d)
    settings.update(getattr(objective, "run_settings", {}))  # kdep-ml: match, weights, grid
    warning = size_warning(src)
    out = Path(cfg.out)
    with writer_lock(out) if d.main else contextlib.nullcontext():
        begin = shared_start(d, lambda: _begin(out, settings, cfg.resume), "train-student")
        if begin["done"]:
            return {"out": str(out), "complete": True, "note": "already trained"}
        start = begin["start"]
        if warning and d.main:
            log.warning("%s", warning)
        if cfg.sync_bn and d.enabled:
            net = sync_batchnorm(net, device)
        net = prepare_model(net, device)
        objective = objective.to(device)
        if cfg.objective == "online":
            prepare_model(objective.teacher[0], device)
        opt = sgd(list(net.parameters()) + list(objective.parameters()), lr, cfg.momentum,
                  cfg.weight_decay)
        t0 = time.perf_counter()
        workers = apply_cpu_defaults(device, cfg.workers, d.enabled,  # threads + workers
                                     json.loads(start["history"]) if start else None)
        feed = Feed(src, NEEDS[cfg.objective], cfg.batch_size, workers, cfg.seed,
                    device.type == "cuda", d.rank, d.world_size, device=device)
        dropped = len(src.ids) - sum(len(b) for b in feed.order.global_batches())
        run = RunContext(out, settings, device, precision, cfg.student, d, cfg.compile)
        history = train(net, objective, src.checked_epochs(feed.epoch), opt, schedule, run,
                        start)
        secs = time.perf_counter() - t0
        if d.main:
            _save(out, cfg, src, net, n_classes, settings, history, warning)
    last = history[-1] if history else {}
    return {"out": str(out), "student": cfg.student, "objective": cfg.objective,
            "epochs": cfg.epochs, "final_loss": round(last.get("loss", float("nan")), 5),
            "first_loss": round(history[0]["loss"], 5) if history else None,
            "lr": lr, "dropped_per_epoch": dropped,  # images in no batch (a short last one)
            "images_per_s": last.get("images_per_s"),  # of the last epoch
            "mean_images_per_s": mean_rate(history), "seconds": round(secs, 1),
            "precision": precision, "device": str(device),
            **({"ranks": d.world_size} if d.enabled else {}),
            **({"warning": warning} if warning else {})}


def _validate(cfg: TrainConfig) -> None:
    from ..checks import check_options
    if cfg.objective not in OBJECTIVES:
        raise InputError(f"unknown objective {cfg.objective!r}; known: {', '.join(OBJECTIVES)}")
    check_options(asdict(cfg))


def _build(cfg: TrainConfig) -> tuple[Source, FeatureNet, int]:
    src = open_source(cfg.targets, cfg.cache, cfg.data, NEEDS[cfg.objective], cfg.image_size,
                      cfg.seed, cfg.max_views)
    n_classes = len(src.images.classes) if cfg.objective == "supervised" else (
        src.cache.manifest["settings"]["teacher"]["num_classes"]
        if cfg.objective == "logits" else 1000)
    net = FeatureNet(build_student(cfg.student, num_classes=n_classes))
    if src.targets is not None and int(src.targets.manifest["dim"]) != net.dim:
        raise InputError(f"targets have width {src.targets.manifest['dim']} but {cfg.student} "
                         f"has {net.dim}: run `kdep-cache fit-svd --cache "
                         f"{src.cache.dir} --student {cfg.student} --out NEW_TARGETS`")
    return src, net, n_classes


def _settings(cfg: TrainConfig, src: Source, lr: float, schedule: Schedule,
              precision: str, d: dist.Dist) -> dict:
    """What defines the run (checked on resume and on rerun), as plain JSON. The ranks and
    --sync-bn decide the BatchNorm statistics, so a resume must keep them."""
    s = {"student": cfg.student, "objective": cfg.objective, "epochs": cfg.epochs,
         "batch_size": cfg.batch_size, "lr": lr, "weight_decay": cfg.weight_decay,
         "momentum": cfg.momentum, "schedule": asdict(schedule),
         "loss_weight": cfg.loss_weight, "temperature": cfg.temperature,
         "image_size": src.image_size, "seed": cfg.seed, "precision": precision,
         "views_used": src.views, "world_size": d.world_size,
         "sync_bn": bool(cfg.sync_bn and d.world_size > 1),
         "lineage": {k: v for k, v in src.lineage().items()  # fingerprints, not paths
                     if k not in ("images_root", "images_file", "cache_dir", "targets_dir")}}
    return json.loads(json.dumps(s))


def _begin(out: Path, settings: dict, resume: bool) -> dict:
    """Rank 0's view of ``out`` (shared with the other ranks): ``done`` when it holds this
    very student already, else the checkpoint to ``start`` from (or None)."""
    if (out / SIDECAR).is_file():
        done = read_sidecar(out / SIDECAR)
        diffs = settings_diffs(done.get("settings") or {}, settings)
        if not diffs:
            check_finished_run(out, done)  # its student.pth is there and is its own (#23.14)
            return {"done": True}
        raise InputError(f"{out} already holds a trained student with other settings "
                         f"({'; '.join(diffs[:3])}); use a new --out")
    return {"done": False, "start": resume_state(out, settings, resume)}


def _save(out: Path, cfg: TrainConfig, src: Source, net: FeatureNet, n_classes: int,
          settings: dict, history: list, warning: str | None) -> None:
    sd = {k: v.detach().cpu() for k, v in net.net.state_dict().items()}
    atomic_write(out / STUDENT_FILE, lambda p: torch.save(sd, p))
    atomic_write(out / STUDENT_SAFETENSORS, lambda p: save_safetensors(  # same tensors, no pickle
        sd, p, {"format": STUDENT, "student": cfg.student}))
    side = {"format": STUDENT, "format_version": SIDECAR_VERSION, "student": cfg.student,
            "family": net.family, "feature_dim": net.dim, "num_classes": n_classes,
            "classes": src.images.classes if cfg.objective == "supervised" else None,
            "input": {"mean": list(src.mean), "std": list(src.std),
                      "image_size": src.image_size},
            "settings": settings, "history": history, "warnings": [warning] if warning else [],
            "lineage": src.lineage(), "producer": producer_info(), "argv": sys.argv,
            "created_at": now_iso()}
    side["fingerprint"] = student_fingerprint(side, weights_sha(sd))
    write_json(out / SIDECAR, side)
    if not cfg.keep_checkpoint:  # the sidecar now marks the run complete
        (out / CHECKPOINT).unlink(missing_ok=True)


def _objective(cfg: TrainConfig, src: Source, net: FeatureNet):
    w = cfg.loss_weight
    if cfg.objective == "kdep":
        return KDEP(w)
    if cfg.objective == "kdep-ml":
        return build_ml(cfg, src, net)
    if cfg.objective.startswith("conv1x1"):
        variant = cfg.objective.split("-")[1]
        dt = int(src.cache.manifest["dim"])
        margin = None
        if variant == "margin":
            margin = margins_from_features(a.reshape(-1, dt) for _, _, a in
                                           src.cache.iter_shards("features"))
        return Conv1x1(net.dim, dt, variant, w, margin)
    if cfg.objective == "logits":
        return LogitsKD(cfg.temperature, w)
    if cfg.objective == "supervised":
        return Supervised(1.0)
    from ..fit.projection import load_projection  # online: the teacher is loaded only here
    from ..models import load_teacher
    t = src.cache.manifest["settings"]["teacher"]
    weights = cfg.teacher_weights or (
        None if t["weights"].startswith(("pypi:", "torchscript")) else t["weights"])
    teacher, info = load_teacher(t["name"], weights, t["norm"], t.get("feature"))
    if info.weights_sha256 != t["weights_sha256"]:
        raise InputError("online: the teacher found now is not the one the cache was made with")
    proj, _ = load_projection(Path(src.targets.dir) / PROJECTION_FILE)
    return Online(teacher, proj, w)
