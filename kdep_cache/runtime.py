"""Device and precision choices shared by every stage."""

from __future__ import annotations

import contextlib

import torch

from .errors import InputError


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for but no CUDA device is available")
    if device != "cpu" and not device.startswith("cuda"):
        raise InputError(f"--device must be auto, cpu or cuda[:N], got {device!r}")
    return torch.device(device)


def autocast(device: torch.device, precision: str):
    """``fp32`` (no autocast), ``fp16`` (CUDA) or ``bf16`` autocast. ``auto`` is the TEACHER
    default: fp16 on CUDA, fp32 on CPU (bf16 teacher features differ ~10% from fp32, so never
    the default for targets). Students choose their own (``train.student.default_precision``)."""
    if precision == "auto":
        precision = "fp16" if device.type == "cuda" else "fp32"
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
    if dtype is None:
        raise InputError(f"unknown precision {precision!r} (auto, fp32, fp16, bf16)")
    if dtype is torch.float16 and device.type != "cuda":
        raise InputError("fp16 autocast needs CUDA; use fp32 or bf16 on CPU")
    return torch.autocast(device.type, dtype=dtype)


def resolved_precision(device: torch.device, precision: str) -> str:
    if precision == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    return precision


def prepare_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    model = model.to(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return model.to(memory_format=torch.channels_last)
