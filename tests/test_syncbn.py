"""--sync-bn (issue 22 items 3 and 7): timm's fused BatchNormAct2d keeps its activation and is
synchronized; CPU ranks compute the statistics in float32 under bf16 autocast and agree with
one process to the noise floor; no deprecated collective API."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp
from timm.layers.norm_act import BatchNormAct2d, SyncBatchNormAct
from torch import nn

from kdep_cache.errors import InputError
from kdep_cache.train.syncbn import GlobalBatchNorm2d, GlobalBatchNormAct2d, sync_batchnorm

BF16_EPS = 2.0 ** -8  # bf16 has 8 significant bits: one unit in the last place, relative


def _fused_net() -> nn.Module:
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(3, 16, 3), BatchNormAct2d(16, act_layer=nn.ReLU),
                        nn.Conv2d(16, 8, 1), nn.BatchNorm2d(8))
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return net


@pytest.mark.parametrize("device,fused_cls,plain_cls", [
    ("cpu", GlobalBatchNormAct2d, GlobalBatchNorm2d),
    ("cuda", SyncBatchNormAct, nn.SyncBatchNorm)])  # the conversion only: no CUDA needed
def test_timm_norm_act_keeps_its_activation_and_is_synchronized(device, fused_cls, plain_cls):
    ref = _fused_net()
    net = sync_batchnorm(_fused_net(), torch.device(device))
    assert type(net[1]) is fused_cls and isinstance(net[1].act, nn.ReLU)
    assert type(net[3]) is plain_cls
    assert list(net.state_dict()) == list(ref.state_dict())
    x = torch.randn(4, 3, 10, 10)
    for mode in (True, False):  # one process: exactly the unconverted module
        net.train(mode), ref.train(mode)
        assert torch.equal(net(x), ref(x)), mode
    assert (net[1](torch.randn(2, 16, 4, 4)) >= 0).all()  # the ReLU is applied


def test_an_unknown_batchnorm_subclass_is_refused():
    class OddNorm(nn.BatchNorm2d):
        def forward(self, x):
            return super().forward(x) * 2

    with pytest.raises(InputError, match="--sync-bn: 1 is a OddNorm"):
        sync_batchnorm(nn.Sequential(nn.Conv2d(3, 4, 1), OddNorm(4)), torch.device("cpu"))


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 3, 12, 12, generator=g) * 3 + 1  # a channel mean far from 0
    r = torch.randn(8, 8, 10, 10, generator=g)
    return x, r


def _grads(net, x, r):
    """Output and gradients (input, every parameter) of ``sum(net(x) * r)`` under bf16
    autocast, as float32."""
    x = x.clone().requires_grad_(True)
    with torch.autocast("cpu", torch.bfloat16):
        y = net(x)
    (y.float() * r).sum().backward()
    return [y.detach().float(), x.grad] + [p.grad for p in net.parameters()]


def _rank(rank: int, path: str, q) -> None:
    tdist.init_process_group("gloo", init_method=f"file://{path}", rank=rank, world_size=2)
    x, r = _data()
    sl = slice(4 * rank, 4 * rank + 4)
    net = sync_batchnorm(_fused_net(), torch.device("cpu"))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        out = _grads(net, x[sl], r[sl])
    q.put((rank, [t.numpy() for t in out], [str(m.message) for m in w
                                            if "deprecated" in str(m.message)]))
    tdist.barrier()
    tdist.destroy_process_group()


@pytest.mark.slow  # two spawned processes: ~20 s on a loaded 2-core machine
def test_two_cpu_ranks_under_bf16_autocast_agree_with_one_process(tmp_path):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_rank, args=(r, str(tmp_path / "pg"), q)) for r in (0, 1)]
    for p in procs:
        p.start()
    got = sorted((q.get(timeout=120) for _ in procs), key=lambda t: t[0])
    for p in procs:
        p.join(30)
    assert [w for _, _, w in got] == [[], []]  # no deprecated-API warning on any rank
    ranks = [[torch.from_numpy(a) for a in arrays] for _, arrays, _ in got]
    # y and the input gradient are per image: the ranks' halves; parameter gradients add up
    dist_out = [torch.cat([ranks[0][i], ranks[1][i]]) for i in (0, 1)] + [
        a + b for a, b in zip(ranks[0][2:], ranks[1][2:])]
    x, r = _data()
    ref = _grads(_fused_net(), x, r)
    rev = torch.arange(7, -1, -1)  # the same batch in another order: the summation noise
    ref_rev = _grads(_fused_net(), x[rev], r[rev])
    ref_rev[:2] = [t[rev] for t in ref_rev[:2]]
    rel = lambda a, b: float((a - b).norm() / b.norm())  # noqa: E731
    for i, (a, b, c) in enumerate(zip(dist_out, ref, ref_rev)):
        # noise floor: the reference's own change with the summation order, or one bf16
        # rounding step in one element of the tensor, whichever is larger; the statistics
        # in bf16 (the defect) were off by 4e-3..6e-3 here, 10x to 1000x above this
        floor = max(rel(c, b), BF16_EPS / b.numel() ** 0.5)
        assert rel(a, b) <= 10 * floor, (i, rel(a, b), floor)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_sync_norm_act_runs_and_keeps_its_activation():
    """One process on CUDA (no group: SyncBatchNorm normalizes locally): the converted net
    computes what the unconverted one does, ReLU included."""
    ref = _fused_net().cuda()
    net = sync_batchnorm(_fused_net().cuda(), torch.device("cuda"))
    assert type(net[1]) is SyncBatchNormAct
    x = torch.randn(4, 3, 10, 10, device="cuda")
    assert (net(x) - ref(x)).abs().max() <= 1e-5 and (net[1](x.new_ones(2, 16, 4, 4)) >= 0).all()
