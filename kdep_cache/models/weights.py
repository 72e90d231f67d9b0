"""Safe checkpoint loading and saving: safetensors where the file is one (detected from its
header, whatever its name), else ``torch.load(weights_only=True)``; clear errors for misfits."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn

from ..errors import ArtifactError, InputError

CLASSIFIER_PREFIXES = ("fc.", "classifier.", "_fc.")  # torchvision, EfficientNet-Lite


def classifier_prefixes(net: nn.Module) -> tuple[str, ...]:
    """State-dict prefixes of the classifier layer only (timm names it in its config: ``fc``,
    ``head``, ``head.fc`` -- so a ConvNeXt ``head.norm`` counts as backbone)."""
    cfg = getattr(net, "pretrained_cfg", None)
    if isinstance(cfg, dict) and cfg.get("classifier"):
        names = cfg["classifier"] if isinstance(cfg["classifier"], (list, tuple)) else [
            cfg["classifier"]]
        return tuple(f"{n}." for n in names)
    return CLASSIFIER_PREFIXES


def is_safetensors(path: str | Path) -> bool:
    """A safetensors file: named ``*.safetensors``, or an 8-byte little-endian header length
    followed by a JSON header."""
    if str(path).endswith(".safetensors"):
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(9)
            size = Path(path).stat().st_size
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < size


def _load_safetensors(path: Path) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise ArtifactError(f"{path} is not a readable safetensors file: "
                            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def save_safetensors(sd: dict, path: str | Path, metadata: dict | None = None) -> None:
    """Write a state_dict as safetensors (tensors made contiguous and unshared)."""
    from safetensors.torch import save_file
    save_file({k: v.detach().cpu().contiguous().clone() for k, v in sd.items()}, str(path),
              metadata={k: str(v) for k, v in (metadata or {}).items()})


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file, a plain state_dict, or the ``state_dict`` / ``model`` entry of
    a checkpoint. Never unpickles arbitrary objects; ``module.`` prefixes (DataParallel) are
    stripped.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"weights file {path} does not exist")
    if is_safetensors(path):
        obj = _load_safetensors(path)
    else:
        obj = _torch_load(path)
    for key in ("state_dict", "model", "student"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ArtifactError(f"{path} does not hold a state_dict of tensors")
    sd = {k.removeprefix("module."): v for k, v in obj.items()}
    if sd and all(k.startswith("net.") for k in sd):  # a kdep-cache training checkpoint
        sd = {k.removeprefix("net."): v for k, v in sd.items()}
    return sd


def _torch_load(path: Path):
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ArtifactError(f"{path} contains pickled Python objects that are not plain "
                            f"tensors; refusing to load it (weights_only): {str(e).splitlines()[0]}"
                            ) from None
    except Exception as e:  # noqa: BLE001 - torch raises many types (and safetensors' own)
        raise ArtifactError(f"{path} is not a readable PyTorch checkpoint: "
                            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    return obj


def fit_state_dict(net: nn.Module, sd: dict, what: str, allow_missing_head: bool = True,
                   drop_head: bool = False) -> bool:
    """Load ``sd`` into ``net``; return whether the classifier was loaded.

    Missing classifier keys are allowed (some published teachers ship without one); any
    other missing/unexpected key or shape mismatch is an error naming the keys.
    """
    own, head = net.state_dict(), classifier_prefixes(net)
    if drop_head:
        sd = {k: v for k, v in sd.items() if not k.startswith(head)}
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shape = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}"
             for k in own if k in sd and sd[k].shape != own[k].shape]
    head_missing = [k for k in missing if k.startswith(head)]
    body_missing = [k for k in missing if not k.startswith(head)]
    head_shape = [s for s in shape if s.startswith(head)]
    body_shape = [s for s in shape if not s.startswith(head)]
    if body_missing or unexpected or body_shape or (head_missing and not allow_missing_head):
        parts = []
        if body_missing or (head_missing and not allow_missing_head):
            miss = body_missing + ([] if allow_missing_head else head_missing)
            parts.append(f"missing keys {_few(miss)}")
        if unexpected:
            parts.append(f"unexpected keys {_few(unexpected)}")
        if body_shape:
            parts.append(f"shape mismatch {_few(body_shape)}")
        raise ArtifactError(f"{what} does not fit the architecture: " + "; ".join(parts))
    load = {k: v for k, v in sd.items() if k in own and v.shape == own[k].shape}
    net.load_state_dict(load, strict=False)
    return not head_missing and not head_shape


def _few(keys: list[str], n: int = 4) -> str:
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more
