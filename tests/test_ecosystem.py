"""timm / Hugging Face teachers and timm students from local files (issue 16).

Every feature is checked against a hand-written forward or a hook on the same model; tiny
random-init models are saved to tmp folders; nothing touches the network.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import extract_cfg
from ecosystem_models import HF_MEAN, HF_STD, hf_folder, timm_weights

from kdep_cache.cache import RAW, Store
from kdep_cache.errors import ArtifactError, InputError
from kdep_cache.models import FeatureNet, build_student, load_teacher, normalization, student_width
from kdep_cache.models.weights import load_state_dict_file, save_safetensors
from kdep_cache.names import RESULTS, SIDECAR, STUDENT_FILE, STUDENT_SAFETENSORS
from kdep_cache.views.augment import normalize, render
from kdep_cache.views.images import ImageList, load_rgb

timm = pytest.importorskip("timm")


def _x(size=64, n=3):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(size + n))


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("eco")


# ---------------------------------------------------------------- timm teachers: the feature
def test_timm_resnet_feature_is_pooled_preactivation_of_last_block(tdir):
    net, w = timm_weights("test_resnet", tdir)
    fnet, info = load_teacher("timm:test_resnet", str(w))
    x = _x()
    with torch.no_grad():  # hand-written: everything up to the last block, then the block by hand
        h = net.maxpool(net.act1(net.bn1(net.conv1(x))))
        h = net.layer4[:-1](net.layer3(net.layer2(net.layer1(h))))
        b = net.layer4[-1]
        short = h if b.downsample is None else b.downsample(h)
        o = b.bn2(b.conv2(b.act1(b.bn1(b.conv1(h)))))
        ref = (o + short).mean(dim=(2, 3))  # the residual sum, before act2
        out = fnet(x, want_logits=True, want_post=True)
        logits = net(x)
    assert torch.allclose(out["pre"], ref, atol=1e-5)
    assert (out["pre"] < 0).any()  # really before the ReLU
    assert torch.allclose(out["post"], F.relu(o + short).mean(dim=(2, 3)), atol=1e-5)
    assert torch.allclose(out["logits"], logits, atol=1e-5)
    assert info.dim == 96 and info.num_classes == 1000
    assert info.feature_layer == "timm ResNet: input of layer4.0.act2 (pre-activation), avg-pooled"


def test_timm_efficientnet_feature_is_conv_head_bn_before_act(tdir):
    net, w = timm_weights("test_efficientnet", tdir)
    fnet, _ = load_teacher("timm:test_efficientnet", str(w))
    x = _x()
    with torch.no_grad():
        h = net.blocks(net.bn1(net.conv_stem(x)))
        bn = net.bn2
        c = net.conv_head(h)
        z = F.batch_norm(c, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0,
                         bn.eps)
        out = fnet(x)
    assert torch.allclose(out["pre"], z.mean(dim=(2, 3)), atol=1e-5)
    assert (out["pre"] < 0).any()


def test_timm_convnext_feature_is_what_the_head_sees(tdir):
    net, w = timm_weights("test_convnext", tdir)
    fnet, info = load_teacher("timm:test_convnext", str(w))
    x = _x()
    with torch.no_grad():
        m = net.stages(net.stem(x)).mean(dim=(2, 3))
        ln = net.head.norm
        ref = F.layer_norm(m, (m.shape[1],), ln.weight, ln.bias, ln.eps)
        out = fnet(x, want_logits=True)
        logits = net(x)
    assert torch.allclose(out["pre"], ref, atol=1e-5)
    assert torch.allclose(net.head.fc(ref), logits, atol=1e-5)
    assert "pre_logits" in info.feature_layer


@pytest.mark.parametrize("feature", ["cls", "mean-patch"])
def test_timm_vit_feature_is_final_norm_token(tdir, feature):
    net, w = timm_weights("test_vit", tdir)
    fnet, info = load_teacher("timm:test_vit", str(w), feature=feature)
    net = timm.create_model("test_vit", dynamic_img_size=True).eval()  # 32 px != its 160
    net.load_state_dict(load_state_dict_file(w), strict=True)
    seen = {}
    net.norm.register_forward_hook(lambda m, i, o: seen.update(tokens=o))
    x = _x(32)
    with torch.no_grad():
        logits = net(x)
        out = fnet(x, want_logits=True)
    tokens = seen["tokens"]
    ref = tokens[:, 0] if feature == "cls" else tokens[:, net.num_prefix_tokens:].mean(1)
    assert torch.allclose(out["pre"], ref, atol=1e-5)
    if feature == "cls":  # the head sees exactly this vector
        assert torch.allclose(net.head(ref), logits, atol=1e-5)
    assert info.feature == feature and info.dim == 64


@pytest.mark.parametrize("name", ["test_vit2", "test_vit3", "test_vit4"])
def test_timm_vit_pooled_otherwise_gives_what_the_head_sees(tdir, name):
    """#22.11: avg pooling + fc_norm (BEiT, MAE, *_gap) or attention pooling: the default
    feature is the head's input, forward_head(pre_logits=True), and it is recorded."""
    net, w = timm_weights(name, tdir)
    fnet, info = load_teacher(f"timm:{name}", str(w))
    net = timm.create_model(name, dynamic_img_size=True).eval()
    net.load_state_dict(load_state_dict_file(w), strict=True)
    seen = {}
    net.head.register_forward_hook(lambda m, i, o: seen.update(x=i[0]))
    x = _x(32)
    with torch.no_grad():
        logits = net(x)
        out = fnet(x, want_logits=True)
    torch.testing.assert_close(out["pre"], seen["x"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["logits"], logits, rtol=1e-5, atol=1e-5)
    assert info.feature == "pre-logits" and "what the head sees" in info.feature_layer
    assert info.dim == out["pre"].shape[1]
    if name == "test_vit2":  # avg + fc_norm: differs from the un-normalised token mean
        _, mp = load_teacher(f"timm:{name}", str(w), feature="mean-patch")
        assert mp.feature == "mean-patch"


def test_timm_pretrained_tag_recorded_and_warned_when_missing(tdir, caplog):
    """#22.12: mean/std come from the pretrained_cfg of a tag; the tag is recorded, and a NAME
    without a tag (timm's default tag decides the normalization) is warned about."""
    _, w = timm_weights("test_vit", tdir)
    with caplog.at_level("WARNING"):
        _, info = load_teacher("timm:test_vit", str(w))
    assert info.pretrained_tag == "r160_in1k" and info.to_json()["pretrained_tag"] == "r160_in1k"
    assert "names no pretrained tag" in caplog.text and "'r160_in1k'" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        _, tagged = load_teacher("timm:test_vit.r160_in1k", str(w))
    assert tagged.pretrained_tag == "r160_in1k" and "pretrained tag" not in caplog.text
    with caplog.at_level("WARNING"):
        _, preset = load_teacher("timm:test_vit", str(w), norm="imagenet")
    assert preset.pretrained_tag is None and "pretrained_tag" not in preset.to_json()
    assert "pretrained tag" not in caplog.text  # --norm decides: nothing to warn about


def test_timm_vit_explicit_cls_on_an_fc_norm_model_warns(caplog):
    from kdep_cache.models.timm_models import TimmFeatures
    net = timm.create_model("test_vit", global_pool="avg", fc_norm=True).eval()
    with caplog.at_level("WARNING"):
        f = TimmFeatures(net, "cls")
    assert f.feature == "cls" and "never sees the raw CLS token" in caplog.text
    assert TimmFeatures(net).feature == "pre-logits"


# ---------------------------------------------------------------- Hugging Face teachers
@pytest.fixture(scope="module")
def hf(tdir):
    pytest.importorskip("transformers")
    return {k: hf_folder(k, tdir) for k in ("vit-cls", "dinov2", "clip-full", "convnext")}


def _hook(module, fn):
    seen = {}
    module.register_forward_hook(lambda m, i, o: seen.update(v=fn(o)))
    return seen


@pytest.mark.parametrize("kind", ["vit-cls", "dinov2", "clip-full", "convnext"])
def test_hf_feature_equals_hook_of_the_same_model(hf, kind):
    net, d = hf[kind]
    fnet, info = load_teacher(f"hf:{d}")
    x = _x(48)  # not the config's 32: position embeddings are interpolated
    with torch.no_grad():
        if kind == "vit-cls":  # the classifier of the checkpoint sees exactly our feature
            seen = _hook(net.vit.layernorm, lambda o: o[:, 0])
            logits = net(pixel_values=x, interpolate_pos_encoding=True).logits
            assert torch.allclose(net.classifier(seen["v"]), logits, atol=1e-5)
        elif kind == "dinov2":
            seen = _hook(net.layernorm, lambda o: o[:, 0])
            net(pixel_values=x)
        elif kind == "clip-full":  # the full CLIP folder: its vision tower, post_layernorm(CLS)
            seen = _hook(net.vision_model.post_layernorm, lambda o: o)
            emb = net.get_image_features(pixel_values=x, interpolate_pos_encoding=True)
            emb = getattr(emb, "pooler_output", emb)
            assert torch.allclose(net.visual_projection(seen["v"]), emb, atol=1e-5)
        else:
            seen = _hook(net.layernorm, lambda o: o)
            net(pixel_values=x)
        out = fnet(x)
    assert torch.allclose(out["pre"], seen["v"], atol=1e-5)
    weights = d / "model.safetensors"
    assert info.weights_sha256 == _sha(weights) and info.weights == str(weights.resolve())
    assert info.mean == HF_MEAN and info.std == HF_STD and info.input_size == 48
    assert info.norm == "hf:preprocessor_config" and info.num_classes is None


def test_hf_mean_patch_option(hf):
    net, d = hf["dinov2"]
    fnet, info = load_teacher(f"hf:{d}", feature="mean-patch")
    seen = _hook(net.layernorm, lambda o: o[:, 1:].mean(1))
    x = _x(32)
    with torch.no_grad():
        net(pixel_values=x)
        assert torch.allclose(fnet(x)["pre"], seen["v"], atol=1e-5)
    assert info.feature == "mean-patch" and "mean of" in info.feature_layer


# ---------------------------------------------------------------- caches and lineage
def _replayed(st: Store, cache: Path, mean, std, size=32):
    il = ImageList.from_json(json.loads((cache / "images.json").read_text()))
    params = st.read("params", np.arange(len(il.paths)), view=0)
    return torch.stack([normalize(render(load_rgb(Path(il.root) / p), params[i], size), mean, std)
                        for i, p in enumerate(il.paths)])


def test_extract_timm_teacher_records_identity_and_equals_replayed_forward(images, tmp_path,
                                                                           tdir):
    net, w = timm_weights("test_resnet", tdir)
    cfg = extract_cfg(images, tmp_path / "c", str(w), teacher="timm:test_resnet", dtype="float32")
    extract(cfg)
    st = Store(tmp_path / "c", RAW)
    t = st.manifest["settings"]["teacher"]
    dc = timm.data.resolve_model_data_config(net)  # the model's own config, read independently
    assert t["mean"] == list(dc["mean"]) and t["std"] == list(dc["std"]) == [0.5, 0.5, 0.5]
    assert t["norm"] == "timm:pretrained_cfg" and t["input_size"] == 160
    assert t["weights_sha256"] == _sha(w) and normalization(t) == (dc["mean"], dc["std"])
    fnet, _ = load_teacher("timm:test_resnet", str(w))
    x = _replayed(st, tmp_path / "c", dc["mean"], dc["std"])
    with torch.no_grad():
        ref = fnet(x)["pre"].numpy()
    assert np.allclose(st.read("features", np.arange(12), view=0), ref, atol=1e-4)


def test_extract_hf_teacher_with_its_preprocessor_normalization(images, tmp_path, hf):
    net, d = hf["dinov2"]
    extract(extract_cfg(images, tmp_path / "c", None, teacher=f"hf:{d}", dtype="float32"))
    st = Store(tmp_path / "c", RAW)
    t = st.manifest["settings"]["teacher"]
    assert t["weights_sha256"] == _sha(d / "model.safetensors") and t["feature"] == "cls"
    x = _replayed(st, tmp_path / "c", HF_MEAN, HF_STD)
    seen = _hook(net.layernorm, lambda o: o[:, 0])
    with torch.no_grad():
        net(pixel_values=x)
    assert np.allclose(st.read("features", np.arange(12), view=0), seen["v"].numpy(), atol=1e-4)


def test_norm_preset_overrides_checkpoint_values_and_old_caches_resolve(tdir):
    _, w = timm_weights("test_resnet", tdir)
    _, info = load_teacher("timm:test_resnet", str(w), norm="imagenet")
    assert info.norm == "imagenet" and "mean" not in info.to_json()
    assert normalization(info.to_json()) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert normalization({"norm": "lite"})[0] == (127 / 255,) * 3  # an old cache: name only
    with pytest.raises(ArtifactError, match="neither a known preset"):
        normalization({"norm": "timm:pretrained_cfg"})


# ---------------------------------------------------------------- students
@pytest.mark.parametrize("name,width", [("test_vit", 64), ("test_resnet", 96),
                                        ("test_efficientnet", 256)])
def test_timm_student_width_and_strict_round_trip(tmp_path, name, width):
    assert student_width(f"timm:{name}") == width
    net = FeatureNet(build_student(f"timm:{name}"))
    save_safetensors(net.net.state_dict(), tmp_path / "s.safetensors")
    sd = load_state_dict_file(tmp_path / "s.safetensors")
    timm.create_model(name).load_state_dict(sd, strict=True)  # plain timm, strict
    kw = {"dynamic_img_size": True} if name == "test_vit" else {}  # run it at 32 px
    fresh = timm.create_model(name, **kw).eval()
    fresh.load_state_dict(sd, strict=True)
    x = _x(32, 2)
    net.eval()
    with torch.no_grad():
        assert torch.equal(fresh(x), net.net(x))
        if name == "test_vit":  # the student's feature is its CLS token before the head
            assert torch.allclose(net.net.head(net(x)["pre"]), net.net(x), atol=1e-5)


@pytest.mark.slow
def test_end_to_end_hf_and_timm_teachers_timm_and_torchvision_students(images, tmp_path, tdir,
                                                                      teacher_file):
    """extract -> fit-svd (cs-var: 12 images are too few for a 64-d SVD) -> train-student (1
    epoch, 12 images, 32 px) for an hf teacher and a
    timm student, a timm teacher and a timm CNN student, a torchvision pair; the saved weights
    load strictly into timm.create_model(NAME) / torchvision, from student.safetensors."""
    import torchvision
    from safetensors.torch import load_file

    from kdep_cache.fit.run import FitConfig, fit_svd
    from kdep_cache.train.student import TrainConfig, train_student
    pytest.importorskip("transformers")
    _, d = hf_folder("dinov2-wide", tdir)
    _, w = timm_weights("test_efficientnet", tdir)
    runs = {}
    for teacher, weights, student in ((f"hf:{d}", None, "timm:test_vit"),
                                      ("timm:test_efficientnet", str(w), "timm:test_resnet"),
                                      ("resnet18", teacher_file, "resnet18")):
        c, t, r = (tmp_path / f"{k}-{student}" for k in ("c", "t", "r"))
        extract(extract_cfg(images, c, weights, teacher=teacher))
        fit_svd(FitConfig(cache=str(c), out=str(t), student=student, aligner="cs-var"))
        s = train_student(TrainConfig(student=student, out=str(r), targets=str(t), epochs=1,
                                      batch_size=4, workers=0, device="cpu"))
        assert np.isfinite(s["final_loss"])
        runs[student] = r
    for name in ("test_vit", "test_resnet"):
        sd = load_file(runs[f"timm:{name}"] / STUDENT_SAFETENSORS)
        timm.create_model(name).load_state_dict(sd, strict=True)
        pth = torch.load(runs[f"timm:{name}"] / STUDENT_FILE, weights_only=True)
        assert pth.keys() == sd.keys() and all(torch.equal(pth[k], sd[k]) for k in sd)
    side = json.loads((runs["timm:test_vit"] / SIDECAR).read_text())
    assert side["input"]["mean"] == HF_MEAN and side["family"] == "timm_vit"
    assert side["settings"]["lr"] == 0.1 * 4 / 512  # timm students: the 0.1 x batch/512 default
    r18 = torchvision.models.resnet18()
    r18.load_state_dict(load_file(runs["resnet18"] / STUDENT_SAFETENSORS), strict=True)
    pth = torch.load(runs["resnet18"] / STUDENT_FILE, weights_only=True)
    assert all(torch.equal(pth[k], v) for k, v in r18.state_dict().items())
    from kdep_cache.transfer.run import TransferConfig, transfer
    for mode in ("linear", "finetune"):  # a timm student transfers like a torchvision one
        res = transfer(TransferConfig(student=str(runs["timm:test_vit"]), data=str(images),
                                      out=str(tmp_path / mode), mode=mode, epochs=1,
                                      batch_size=4, seeds=(0,), workers=0, device="cpu",
                                      allow_leakage=True))
        doc = json.loads((Path(res["out"]) / RESULTS).read_text())
        assert doc["student"]["arch"] == "timm:test_vit" and doc["summary"], doc["summary"]


# ---------------------------------------------------------------- safetensors reading
def test_safetensors_detected_by_header_not_name(tmp_path):
    sd = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.ones(2)}
    save_safetensors(sd, tmp_path / "w.pth")  # misnamed on purpose
    got = load_state_dict_file(tmp_path / "w.pth")
    assert got.keys() == sd.keys() and all(torch.equal(got[k], sd[k]) for k in sd)
    (tmp_path / "cut.safetensors").write_bytes((tmp_path / "w.pth").read_bytes()[:40])
    with pytest.raises(ArtifactError, match="not a readable safetensors file"):
        load_state_dict_file(tmp_path / "cut.safetensors")


# ---------------------------------------------------------------- bad inputs: one line each
def _one_line(exc_info):
    assert "\n" not in str(exc_info.value)


def test_bad_timm_inputs(tdir, tmp_path):
    _, w = timm_weights("test_resnet", tdir)
    cases = [
        (("timm:no_such_net", str(w)), InputError, "timm has no model 'no_such_net'"),
        (("timm:test_resnet", None), InputError, "needs --teacher-weights FILE"),
        (("timm:test_efficientnet", str(w)), ArtifactError, "missing keys .*unexpected keys"),
        (("timm:test_resnet", str(tmp_path / "none.safetensors")), InputError, "does not exist"),
    ]
    sd = load_state_dict_file(w)
    sd.pop("layer1.0.conv1.weight")
    sd["extra.weight"] = torch.zeros(1)
    save_safetensors(sd, tmp_path / "bad.safetensors")
    cases.append((("timm:test_resnet", str(tmp_path / "bad.safetensors")), ArtifactError,
                  r"missing keys layer1\.0\.conv1\.weight; unexpected keys extra\.weight"))
    for args, err, msg in cases:
        with pytest.raises(err, match=msg) as e:
            load_teacher(*args)
        _one_line(e)
    for feature, teacher in (("mean-patch", "timm:test_resnet"), ("cls", "resnet18")):
        with pytest.raises(InputError, match="ViT") as e:
            load_teacher(teacher, str(w) if "timm" in teacher else "random", feature=feature)
        _one_line(e)
    with pytest.raises(InputError, match="unknown student 'timm_x'") as e:
        build_student("timm_x")
    with pytest.raises(InputError, match="timm has no model") as e:
        student_width("timm:nope")


def test_bad_hf_inputs(hf, tmp_path):
    import shutil
    _, d = hf["dinov2"]
    cases = {"hub name": ("hf:facebook/dinov2-small", "not a local Hugging Face folder.*"
                          "save_pretrained\\(DIR\\)")}
    nopre = tmp_path / "nopre"
    shutil.copytree(d, nopre)
    (nopre / "preprocessor_config.json").unlink()
    cases["no preprocessor"] = (f"hf:{nopre}", "no preprocessor_config.json.*--norm imagenet")
    now = tmp_path / "noweights"
    shutil.copytree(d, now)
    (now / "model.safetensors").unlink()
    cases["no weights"] = (f"hf:{now}", "holds no model.safetensors")
    other = tmp_path / "bert"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (other / "model.safetensors").write_bytes(b"")
    cases["unsupported"] = (f"hf:{other}", "'bert' model; supported: vit, dinov2")
    trunc = tmp_path / "missing"
    shutil.copytree(d, trunc)
    sd = load_state_dict_file(trunc / "model.safetensors")
    save_safetensors({k: v for k, v in sd.items() if "layernorm" not in k},
                     trunc / "model.safetensors")
    cases["missing keys"] = (f"hf:{trunc}", "do not fit Dinov2Model: missing keys layernorm")
    for spec, msg in cases.values():
        with pytest.raises((InputError, ArtifactError), match=msg) as e:
            load_teacher(spec)
        _one_line(e)
    with pytest.raises(InputError, match="not used with hf:") as e:
        load_teacher(f"hf:{d}", str(tmp_path / "x.pth"))
    _, info = load_teacher(f"hf:{nopre}", norm="imagenet")  # --norm makes it usable
    assert info.norm == "imagenet" and info.mean is None


def test_cli_bad_teacher_is_one_line(images, tmp_path):
    from click.testing import CliRunner

    from kdep_cache.cli import main
    r = CliRunner().invoke(main, ["extract", "--data", str(images), "--teacher",
                                  "timm:test_resnet", "--out", str(tmp_path / "c")])
    assert r.exit_code == 2 and r.output.count("\n") == 1
    assert r.output.startswith("error: teacher timm:test_resnet needs --teacher-weights FILE")


def extract(cfg):
    from kdep_cache.extract.run import extract as run
    return run(cfg)


def _cli_takes_prefixed_names(tmp_path) -> bool:
    """The torch-free CLI checks (kdep_cache/checks.py) accept timm:NAME students and hf:DIR."""
    from kdep_cache import checks
    try:
        checks.student("student", "timm:test_resnet")
        checks.check_paths({"teacher": f"hf:{tmp_path}"}, weights=("teacher",))
    except InputError:
        return False
    return True


@pytest.mark.slow
def test_cli_end_to_end_timm_and_hf(images, tmp_path, tdir):
    """The commands a user types: extract (timm: and hf:) -> fit-svd -> train-student timm:."""
    from click.testing import CliRunner

    from kdep_cache.cli import main
    if not _cli_takes_prefixed_names(tmp_path):
        pytest.skip("kdep_cache/checks.py does not accept timm:NAME / hf:DIR yet")
    pytest.importorskip("transformers")
    _, w = timm_weights("test_efficientnet", tdir)
    _, d = hf_folder("dinov2-wide", tdir)
    run = CliRunner().invoke
    common = ["--data", str(images), "--views", "2", "--image-size", "32", "--batch-size", "4",
              "--workers", "0", "--device", "cpu"]
    for name, teacher in (("t", ["--teacher", "timm:test_efficientnet", "--teacher-weights",
                                 str(w)]),
                          ("h", ["--teacher", f"hf:{d}", "--teacher-feature", "mean-patch"])):
        r = run(main, ["extract", *common, *teacher, "--out", str(tmp_path / f"c{name}")])
        assert r.exit_code == 0, r.output
        r = run(main, ["fit-svd", "--cache", str(tmp_path / f"c{name}"), "--student",
                       "timm:test_vit", "--aligner", "cs-var", "--out", str(tmp_path / f"t{name}")])
        assert r.exit_code == 0, r.output
        r = run(main, ["train-student", "--student", "timm:test_vit", "--targets",
                       str(tmp_path / f"t{name}"), "--epochs", "1", "--batch-size", "4",
                       "--workers", "0", "--device", "cpu", "--out", str(tmp_path / f"r{name}")])
        assert r.exit_code == 0, r.output
        timm.create_model("test_vit").load_state_dict(
            load_state_dict_file(tmp_path / f"r{name}" / STUDENT_SAFETENSORS), strict=True)
    t = Store(tmp_path / "ch", RAW).manifest["settings"]["teacher"]
    assert t["feature"] == "mean-patch" and t["mean"] == HF_MEAN


def test_hf_extra_floor_has_the_arguments_the_code_calls():
    """#22.13: CLIPVisionModel.forward gained interpolate_pos_encoding in transformers 4.46.0
    (4.45.x lacks it: checked in the published wheels); setup.cfg's hf floor must be >= that."""
    import configparser
    import inspect
    import re

    cfg = configparser.ConfigParser()
    cfg.read(Path(__file__).parent.parent / "setup.cfg")
    hf = cfg["options.extras_require"]["hf"]
    floor = tuple(int(x) for x in re.search(r"transformers>=([\d.]+)", hf).group(1).split("."))
    assert floor >= (4, 46), hf
    tf = pytest.importorskip("transformers")
    for cls in (tf.CLIPVisionModel, tf.ViTModel):  # hf_models passes it to both
        assert "interpolate_pos_encoding" in inspect.signature(cls.forward).parameters
