"""Safe checkpoint loading: ``weights_only=True`` always, clear errors for misfits."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn

from ..errors import ArtifactError, InputError

CLASSIFIER_PREFIXES = ("fc.", "classifier.", "_fc.")


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a plain state_dict, or the ``state_dict`` / ``model`` entry of a checkpoint.

    Never unpickles arbitrary objects; ``module.`` prefixes (DataParallel) are stripped.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"weights file {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ArtifactError(f"{path} contains pickled Python objects that are not plain "
                            f"tensors; refusing to load it (weights_only): {str(e).splitlines()[0]}"
                            ) from None
    except (RuntimeError, OSError, EOFError, ValueError) as e:
        raise ArtifactError(f"{path} is not a readable PyTorch checkpoint: "
                            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
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


def fit_state_dict(net: nn.Module, sd: dict, what: str, allow_missing_head: bool = True,
                   drop_head: bool = False) -> bool:
    """Load ``sd`` into ``net``; return whether the classifier was loaded.

    Missing classifier keys are allowed (some published teachers ship without one); any
    other missing/unexpected key or shape mismatch is an error naming the keys.
    """
    own = net.state_dict()
    if drop_head:
        sd = {k: v for k, v in sd.items() if not k.startswith(CLASSIFIER_PREFIXES)}
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shape = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}"
             for k in own if k in sd and sd[k].shape != own[k].shape]
    head_missing = [k for k in missing if k.startswith(CLASSIFIER_PREFIXES)]
    body_missing = [k for k in missing if not k.startswith(CLASSIFIER_PREFIXES)]
    head_shape = [s for s in shape if s.startswith(CLASSIFIER_PREFIXES)]
    body_shape = [s for s in shape if not s.startswith(CLASSIFIER_PREFIXES)]
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
