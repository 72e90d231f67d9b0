"""Each training objective against a hand-written numpy formula on fixed tensors.

Every expected value is computed here from the definition (float64 numpy), never copied from
the code's output; each assertion's comment names the mutation of the objective it catches.
"""

import numpy as np
import pytest
import torch

from kdep_cache.train.objectives import (
    KDEP,
    Conv1x1,
    LogitsKD,
    Supervised,
    margins_from_features,
)

# fixed, asymmetric values (no symmetry that would hide a swapped argument)
S = np.array([[0.5, -1.0, 2.0, 0.0], [1.5, 0.25, -0.75, -2.0], [-0.3, 0.9, 0.1, 1.2]])
T = np.array([[1.0, -0.5, 0.0, 0.5], [-1.0, 0.75, -0.25, -3.0], [0.2, 0.4, 1.1, -0.6]])


def _t(a, grad=False):
    return torch.tensor(a, dtype=torch.float32, requires_grad=grad)


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_kdep_is_mean_squared_error_times_weight():
    w = 2.5
    s = _t(S, grad=True)
    out = KDEP(weight=w)({"pre": s}, _t(T))
    mse = np.mean((S - T) ** 2)                 # mean over batch AND channels
    assert out["mse"].item() == pytest.approx(mse, rel=1e-6)      # sum / per-row mean / abs
    assert out["loss"].item() == pytest.approx(w * mse, rel=1e-6)  # weight dropped or squared
    out["loss"].backward()
    # d/ds of w * mean((s - t)^2) = 2 w (s - t) / N: catches a flipped sign (loss = -mse or
    # (s + t)^2) and a target that is not detached from a wrong argument order
    assert np.allclose(s.grad.numpy(), 2 * w * (S - T) / S.size, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("variant", ["pre", "post"])
def test_conv1x1_maps_the_student_feature_then_mse(variant):
    torch.manual_seed(0)
    obj = Conv1x1(d_student=4, d_teacher=3, variant=variant, weight=1.5)
    wt, b = obj.proj.weight.detach().double().numpy(), obj.proj.bias.detach().double().numpy()
    teacher = T[:, :3]
    pre, post = S, np.maximum(S, 0)
    out = obj({"pre": _t(pre), "post": _t(post)}, _t(teacher))
    x = post if variant == "post" else pre       # pre: before the ReLU; post: after it
    mse = np.mean((x @ wt.T + b - teacher) ** 2)
    assert out["mse"].item() == pytest.approx(mse, rel=1e-6)  # pre/post input swapped; no bias
    assert out["loss"].item() == pytest.approx(1.5 * mse, rel=1e-6)  # weight ignored
    assert obj.needs == ("post" if variant == "post" else "features")


def _heo_partial_l2(s, t, m):
    """Heo et al. 2019 (ICCV, "A Comprehensive Overhaul of Feature Distillation"), Eq. 2-3 and
    their code: target = max(t, m) (margin ReLU, m < 0); the element's loss is 0 when
    student <= target <= 0 (the teacher is "off" and the student is already below it), else
    (student - target)^2. Their code: ``mask = (source > target) | (target > 0)``; the mean is
    over every element, masked ones counted as 0 (kdep-cache's convention: MSE-like mean)."""
    tgt = np.maximum(t, m)
    out = np.empty_like(s)
    for idx in np.ndindex(s.shape):
        si, ti = s[idx], tgt[idx]
        out[idx] = 0.0 if (si <= ti and ti <= 0) else (si - ti) ** 2
    return out.mean()


def test_conv1x1_margin_is_heo_partial_l2_with_its_mask():
    # identity map (weight I, bias 0) so that the student side is exactly S
    obj = Conv1x1(4, 4, "margin", weight=2.0, margin=torch.tensor([-0.5, -0.2, -1.0, -0.4]))
    with torch.no_grad():
        obj.proj.weight.copy_(torch.eye(4))
        obj.proj.bias.zero_()
    m = np.array([-0.5, -0.2, -1.0, -0.4])
    tgt = np.maximum(T, m)
    # the fixed values cover every case of the rule
    assert np.any((S <= tgt) & (tgt <= 0))           # masked: student below a non-positive target
    assert np.any((S > tgt) & (tgt <= 0))            # student above a non-positive target
    assert np.any(tgt > 0)                           # positive target: always full L2
    assert np.any(T < m)                             # teacher below its margin: target = margin
    out = obj({"pre": _t(S)}, _t(T))
    want = _heo_partial_l2(S, T, m)
    full_l2 = np.mean((S - tgt) ** 2)
    no_margin = _heo_partial_l2(S, T, -np.inf)
    inverted = np.mean(np.where((S < tgt) | (tgt > 0), (S - tgt) ** 2, 0.0))
    for other in (full_l2, no_margin, inverted):      # the test can tell each mutation apart
        assert abs(other - want) > 1e-3
    # catches: mask dropped (full L2), margin not applied / min instead of max (no_margin),
    # mask direction flipped (student < target), mean over the unmasked elements only
    assert out["mse"].item() == pytest.approx(want, rel=1e-6)
    assert out["loss"].item() == pytest.approx(2.0 * want, rel=1e-6)  # weight ignored


def test_margin_is_the_mean_of_the_negative_responses_per_channel():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(50, 3)) + np.array([0.0, 1.0, 10.0])  # channel 2: (almost) no negatives
    x[:, 2] = np.abs(x[:, 2])                                  # none at all: margin 0
    chunks = [x[:7], x[7:31], x[31:]]                          # streamed in uneven pieces
    m = margins_from_features(iter(chunks)).numpy()
    want = [x[x[:, j] < 0, j].mean() for j in range(2)]        # E[x | x < 0]
    assert np.allclose(m[:2], want, rtol=1e-6)   # E[x] or E[min(x,0)] over all rows would differ
    assert m[2] == 0.0 and np.all(m[:2] < 0)     # sign: a margin is negative (clamp(max=0))


def test_logits_kd_is_kl_teacher_to_student_times_t_squared():
    tau, w = 4.0, 0.7
    s_logits = np.array([[2.0, -1.0, 0.5, 3.0], [0.1, 0.2, -2.0, 1.0]]) * 3
    t_logits = np.array([[-1.0, 4.0, 0.0, 1.0], [2.5, -0.5, 1.5, -3.0]]) * 3
    out = LogitsKD(temperature=tau, weight=w)({"logits": _t(s_logits)}, _t(t_logits))
    p, q = _softmax(t_logits / tau), _softmax(s_logits / tau)
    kl_tq = np.sum(p * (np.log(p) - np.log(q)), axis=1).mean()  # KL(teacher || student), per image
    kl_qt = np.sum(q * (np.log(q) - np.log(p)), axis=1).mean()  # the wrong direction
    assert abs(kl_tq - kl_qt) > 1e-2             # the values can tell the directions apart
    want = tau**2 * kl_tq
    # catches: KL(student || teacher), the T^2 factor dropped (x16 here), reduction "mean"
    # over classes instead of per image (/4), temperature applied to one side only
    assert out["kl"].item() == pytest.approx(want, rel=1e-5)
    assert out["loss"].item() == pytest.approx(w * want, rel=1e-5)
    same = LogitsKD(temperature=tau)({"logits": _t(t_logits)}, _t(t_logits))
    assert abs(same["kl"].item()) < 1e-5          # zero at the teacher (sign / offset errors)


def test_supervised_is_cross_entropy_on_labels():
    logits = np.array([[2.0, -1.0, 0.5], [0.1, 0.2, -2.0], [-1.0, 3.0, 0.0], [0.3, 0.3, 0.9]])
    y = np.array([0, 2, 1, 1])
    out = Supervised(1.0)({"logits": _t(logits)}, torch.tensor(y))
    logp = np.log(_softmax(logits))
    ce = -logp[np.arange(4), y].mean()
    # catches: +log p (wrong sign), NLL on raw logits without log_softmax, sum over the batch
    assert out["ce"].item() == pytest.approx(ce, rel=1e-6)
    assert out["loss"].item() == pytest.approx(ce, rel=1e-6)
    assert out["acc"].item() == pytest.approx(np.mean(logits.argmax(1) == y))  # 2 of 4 right
