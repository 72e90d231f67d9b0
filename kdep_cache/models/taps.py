"""Named stage maps of a teacher or student (multi-layer KD, issue 27): hooks that add
``out["maps"] = {name: (N, C, H, W) pre-activation map}`` to every forward of a
:class:`~kdep_cache.models.FeatureNet`.

Names and what is taken, per family (pre-activation = before the stage's final activation,
as the pooled feature is, see ``features.py``):
- torchvision ResNet ``layer1..layer4``: the last block's ``out + identity`` (the input of
  its last ReLU call; ``layer4`` is the feature map itself, through ``FeatureNet.map_tap``);
- torchvision MobileNetV2/V3 ``features.1..features.N``: a block's output (inverted
  residuals end linearly); the last one is the 1x1 conv + BN before ReLU6 / Hardswish;
- EfficientNet-Lite ``_blocks.0..`` (linear block outputs) and ``_conv_head`` (+ ``_bn1``);
- timm CNNs: their ``feature_info`` module names; the input of the activation that makes a
  stage's output where one does (found by a probe forward), else the stage's output;
- ViTs (timm, Hugging Face ViT / DINOv2 / CLIP): ``tokens``, the final-layer patch tokens
  (prefix tokens dropped) as the model outputs them, reshaped to their (H/p, W/p) grid.
Hooks sit on blocks, activations and stage modules, never on BatchNorms, so they survive
``--sync-bn`` (which swaps the BatchNorms) and DistributedDataParallel (which calls the same
modules).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import InputError
from .timm_models import _PASS, _is_activation

VIT_TOKENS = "tokens"
_OWN_MAP = ("resnet", "mobilenet", "efficientnet_lite")  # the last map is FeatureNet's own


def tap_names(fnet) -> list[str]:
    """Every layer name ``fnet`` can give a map of, in network order ([] if none)."""
    net, fam = fnet.net, fnet.family
    if fam == "resnet":
        return ["layer1", "layer2", "layer3", "layer4"]
    if fam == "mobilenet":
        return [f"features.{i}" for i in range(1, len(net.features))]
    if fam == "efficientnet_lite":
        return [f"_blocks.{i}" for i in range(len(net._blocks))] + ["_conv_head"]
    if fam == "timm_cnn":
        return [fi["module"] for fi in getattr(net, "feature_info", None) or []]
    if fam == "timm_vit" or (fam == "hf" and fnet.adapter.family in ("vit", "clip")):
        return [VIT_TOKENS]
    return []


def check_names(fnet, names, what: str) -> None:
    have = tap_names(fnet)
    if not have:
        raise InputError(f"{what} ({type(fnet.net).__name__}) gives no stage maps: multi-layer "
                         "KD needs a torchvision ResNet / MobileNet, EfficientNet-Lite, a timm "
                         "CNN or a ViT")
    bad = [n for n in names if n not in have]
    if bad:
        raise InputError(f"{what} has no layer {bad[0]!r}; its layers: {', '.join(have)}")


def pool_map(m: torch.Tensor, grid: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, grid*grid, C): adaptive average pool, cells in row-major order."""
    return F.adaptive_avg_pool2d(m.float(), grid).flatten(2).transpose(1, 2)


class Taps:
    """Hooks on ``fnet`` capturing the maps of ``names``; :meth:`remove` takes them off."""

    def __init__(self, fnet, names, what: str = "the network"):
        check_names(fnet, names, what)
        self.fnet, self.names = fnet, tuple(names)
        self._got: dict[str, torch.Tensor] = {}
        self._size = None
        self._handles = [fnet.register_forward_pre_hook(self._start)]
        for n in self.names:
            self._install(n)
        self._handles.append(fnet.register_forward_hook(self._finish))

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def _start(self, module, args):
        self._got, self._size = {}, tuple(args[0].shape[-2:])

    def _finish(self, module, args, out):
        missing = [n for n in self.names if n not in self._got]
        if missing:  # a forward that skipped a hooked module: never silently no map
            raise RuntimeError(f"no map was captured for {missing}")
        out["maps"] = {n: self._got[n] for n in self.names}
        self._got = {}

    def _put(self, name):
        def hook(module, args, out):
            self._got[name] = out.clone()
        return hook

    def _install(self, name: str) -> None:
        f, net, fam = self.fnet, self.fnet.net, self.fnet.family
        add = self._handles.append
        if fam in _OWN_MAP and name == tap_names(f)[-1]:
            add(f.map_tap.register_forward_hook(self._put(name)))
        elif fam == "resnet":
            self._resnet(name, net.get_submodule(name)[-1])
        elif fam in ("mobilenet", "efficientnet_lite"):
            add(net.get_submodule(name).register_forward_hook(self._put(name)))
        elif fam == "timm_cnn":
            where, mod = _timm_tap(net, name)
            if where == "pre":  # the activation's input, before an in-place one overwrites it
                add(net.get_submodule(mod).register_forward_pre_hook(
                    lambda m, a, n=name: self._got.__setitem__(n, a[0].clone())))
            else:
                add(net.get_submodule(mod).register_forward_hook(self._put(name)))
        else:
            self._tokens(net, fam)

    def _resnet(self, name: str, block) -> None:
        """The last ReLU call of a block comes after ``out += identity``: its input."""
        calls = 3 if hasattr(block, "conv3") else 2
        seen = [0]

        def start(m, a):
            seen[0] = 0

        def relu(m, a):
            seen[0] += 1
            if seen[0] == calls:
                self._got[name] = a[0].clone()  # in-place ReLU: copied before it runs
        self._handles += [block.register_forward_pre_hook(start),
                          block.relu.register_forward_pre_hook(relu)]

    def _tokens(self, net, fam: str) -> None:
        if fam == "timm_vit":
            mod, prefix = net.norm, int(net.num_prefix_tokens)
            patch = tuple(net.patch_embed.patch_size)
        else:
            c = net.config
            clip = self.fnet.adapter.family == "clip"
            inner = getattr(net, "vision_model", net)  # CLIPVisionModel wraps it, or is it
            mod = inner.encoder if clip else net.layernorm
            prefix = 1 + int(getattr(c, "num_register_tokens", 0) or 0)
            patch = (int(c.patch_size),) * 2

        def hook(m, a, out):
            t = out[0] if not torch.is_tensor(out) else out  # HF encoder: last_hidden_state
            n, count, c = t.shape
            h, w = self._size[0] // patch[0], self._size[1] // patch[1]
            if count - prefix != h * w:
                raise InputError(f"{count - prefix} patch tokens do not form the {h}x{w} grid of "
                                 f"a {self._size[0]}x{self._size[1]} input")
            self._got[VIT_TOKENS] = t[:, prefix:].transpose(1, 2).reshape(n, c, h, w)
        self._handles.append(mod.register_forward_hook(hook))


def _timm_tap(net, stage: str) -> tuple[str, str]:
    """``("pre", activation)`` when an activation module makes the stage's output (its input
    is the pre-activation map), else ``("out", stage)``; by a probe forward."""
    calls, mark = [], {}
    leaves = [(n, m) for n, m in net.named_modules() if not any(True for _ in m.children())]
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: calls.append((n, mod, o)))
             for n, m in leaves]

    def at_stage(mod, i, o):  # (a hook that returns a value would replace the output)
        mark.setdefault("at", (len(calls), o))
    hooks.append(net.get_submodule(stage).register_forward_hook(at_stage))
    was, p = net.training, next(net.parameters())
    try:
        net.eval()
        with torch.no_grad():
            net.forward_features(torch.zeros(1, 3, 64, 64, device=p.device))
    finally:
        for h in hooks:
            h.remove()
        net.train(was)
    upto, out = mark["at"]
    last = next(((n, m) for n, m, o in reversed(calls[:upto])
                 if o is out and not isinstance(m, _PASS)), None)
    return ("pre", last[0]) if last is not None and _is_activation(last[1]) else ("out", stage)


@torch.no_grad()
def map_shapes(fnet, names, size: int, what: str = "the network") -> dict[str, tuple]:
    """``{name: (C, H, W)}`` of each map at a ``size`` x ``size`` input (one probe forward)."""
    taps = Taps(fnet, names, what)
    was, p = fnet.training, next(fnet.parameters())
    try:
        fnet.eval()
        out = fnet(torch.zeros(1, 3, size, size, device=p.device, dtype=p.dtype))
    finally:
        taps.remove()
        fnet.train(was)
    return {n: tuple(int(s) for s in m.shape[1:]) for n, m in out["maps"].items()}


def stage_ends(fnet, size: int = 64) -> list[str]:
    """A student's stages: the last tap of each resolution, the deepest four (ResNet
    ``layer1..4``; MobileNetV2 ``features.3 / .6 / .13 / .18``, strides 4 to 32)."""
    names = tap_names(fnet)
    if not names:
        check_names(fnet, [], "the student")
    shapes = map_shapes(fnet, names, size, "the student")
    ends = [n for n, nxt in zip(names, [*names[1:], None])
            if nxt is None or shapes[nxt][1:] != shapes[n][1:]]
    return ends[-4:]


def depths(names, all_names) -> dict[str, float]:
    """Relative depth of each of ``names`` in the network: (position + 1) / number of taps."""
    return {n: (all_names.index(n) + 1) / len(all_names) for n in names}


def match_by_depth(layer_depths: dict[str, float], stages: list[str],
                   override: dict[str, str] | None = None) -> dict[str, str]:
    """Teacher layer -> student stage: the stage nearest in relative depth ((j + 1) / n for
    stage j of n; ties go deeper), or ``override`` (which then names the layers to use)."""
    if override is not None:
        bad = [t for t in override if t not in layer_depths]
        if bad:
            raise InputError(f"--match names layer {bad[0]!r}, which the cache does not hold; "
                             f"its layers: {', '.join(layer_depths)}")
        bad = [s for s in override.values() if s not in stages]
        if bad:
            raise InputError(f"--match names student stage {bad[0]!r}; the student's stages: "
                             f"{', '.join(stages)}")
        return dict(override)
    n = len(stages)
    return {t: stages[min(range(n), key=lambda j: (abs(d - (j + 1) / n), -j))]
            for t, d in layer_depths.items()}
