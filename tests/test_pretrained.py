"""Pretrained ImageNet nets: weights files, download, preprocessing, class names, top-k."""

from __future__ import annotations

import hashlib
import io
import json
import urllib.error
import urllib.response
from email.message import Message

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from cnnlab.errors import CnnlabError
from cnnlab.fast.winograd import winograd_inference
from cnnlab.models import count_params, pretrained
from cnnlab.models.squeezenet import squeezenet1_1
from cnnlab.models.vgg import vgg16

CLOTHING = {"military_uniform", "suit", "Windsor_tie", "bow_tie", "academic_gown", "mortarboard", "jersey",
            "lab_coat", "trench_coat", "cardigan", "pajama", "sweatshirt", "bulletproof_vest", "cloak"}


@pytest.fixture(scope="module")
def squeezenet(squeeze_weights):
    return pretrained.load_pretrained("squeezenet1_1", weights=squeeze_weights)


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "cnnlab" / "models"


def serve(data: bytes, calls: list | None = None):
    """An opener standing in for urllib.request.urlopen, serving ``data``."""
    def opener(url, timeout=None):
        if calls is not None:
            calls.append(url)
        headers = Message()
        headers["Content-Length"] = str(len(data))
        return urllib.response.addinfourl(io.BytesIO(data), headers, url, code=200)
    return opener


# ------------------------------------------------------------------------ class names

def test_class_names_match_the_keras_index(shared_dir):
    index = json.loads((shared_dir / "imagenet_class_index.json").read_text())
    assert pretrained.imagenet_classes() == [index[str(i)][1] for i in range(1000)]


def test_class_names_ship_with_the_package():
    names = pretrained.imagenet_classes()
    assert len(names) == 1000 and names[0] == "tench" and names[285] == "Egyptian_cat"


# ------------------------------------------------------------------- SqueezeNet, real

def test_squeezenet_reproduces_the_reference_output(squeezenet, shared_dir):
    ref = np.load(shared_dir / "models" / "squeezenet1_1-reference.npz")
    with torch.inference_mode():
        out = squeezenet(torch.from_numpy(ref["input"]))
    np.testing.assert_allclose(out.numpy(), ref["output"], atol=1e-3)
    assert not squeezenet.training and count_params(squeezenet) == 1_235_496


def test_winograd_squeezenet_reproduces_the_reference_output(squeeze_weights, shared_dir):
    ref = np.load(shared_dir / "models" / "squeezenet1_1-reference.npz")
    net = pretrained.load_pretrained("squeezenet1_1", weights=squeeze_weights, winograd=True)
    assert sum(type(m).__name__ == "WinogradConv2d" for m in net.modules()) == 0  # its 3x3 layers are too narrow
    net = winograd_inference(net, min_in_channels=16, min_out_channels=64)  # convert them all the same
    assert sum(type(m).__name__ == "WinogradConv2d" for m in net.modules()) == 8
    with torch.inference_mode():
        out = net(torch.from_numpy(ref["input"]))
    np.testing.assert_allclose(out.numpy(), ref["output"], atol=1e-3)


def test_cat_and_grace_hopper(squeezenet, shared_dir):
    cat, hopper = pretrained.classify([shared_dir / "images" / "cat.jpg", "grace_hopper"], model=squeezenet)
    assert cat[0][1] in {"Egyptian_cat", "tabby", "tiger_cat"}
    assert {name for _, name, _ in hopper} & CLOTHING
    for preds in (cat, hopper):
        probs = [p for _, _, p in preds]
        assert len(preds) == 5 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
        assert all(pretrained.imagenet_classes()[i] == name for i, name, _ in preds)


def test_classify_one_photo_by_name_and_weights(squeeze_weights, shared_dir):
    (result,) = pretrained.classify(str(shared_dir / "images" / "cat.jpg"), weights=squeeze_weights, top=1)
    assert len(result) == 1 and result[0][0] == 285


# ---------------------------------------------------------------- bf16 against fp32

def test_bf16_keeps_the_top1_of_the_reference_pair_and_the_cat(squeezenet, shared_dir):
    # Issue 18: bf16 inference must keep the top-1; the reference pair's input and the cat.
    ref = np.load(shared_dir / "models" / "squeezenet1_1-reference.npz")
    photos = [shared_dir / "images" / "cat.jpg"]
    x = torch.cat([torch.from_numpy(ref["input"]), torch.stack([pretrained.preprocess(p) for p in photos])])
    with torch.inference_mode():
        p32 = squeezenet(x).float().softmax(1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            p16 = squeezenet(x).float().softmax(1)
    assert p32.argmax(1).tolist() == p16.argmax(1).tolist() == [490, 285]  # chain mail, Egyptian cat
    assert (p32 - p16).abs().max() < 0.03 and not torch.equal(p32, p16)  # close, and really in bf16
    cat32, cat16 = (pretrained.classify(photos, model=squeezenet, precision=p) for p in ("fp32", "bf16"))
    assert [i for i, _, _ in cat32[0]] == [i for i, _, _ in cat16[0]][:5]


@pytest.mark.slow
def test_squeezenet_stays_fp32_under_auto_because_bf16_flips_its_near_ties(squeezenet, cifar10_dir, monkeypatch):
    # The measurement behind FP32_UNDER_AUTO: on natural images SqueezeNet is unsure of
    # (CIFAR-10 test images, upscaled to 224 by classify's own preprocessing) bf16 changes the
    # top-1 of far more than the 0.1% issue 18 allows (61 of 1,000 measured), and only where
    # fp32's two best classes are nearly tied. If a torch release makes this pass 99.9%,
    # the pin can go.
    from cnnlab.data import load

    monkeypatch.setenv("CNNLAB_CPU_BF16", "1")
    images = list(load("cifar10", root=cifar10_dir.parent, download=False).test.images[:200])
    top2 = {p: pretrained.classify(images, model=squeezenet, top=2, precision=p, batch_size=50)
            for p in ("fp32", "bf16")}
    flipped = [a for a, b in zip(top2["fp32"], top2["bf16"], strict=True) if a[0][0] != b[0][0]]
    assert len(flipped) >= 2, f"bf16 kept the top-1 of {200 - len(flipped)}/200: reconsider FP32_UNDER_AUTO"
    assert all(a[0][2] - a[1][2] < 0.1 for a in flipped)  # near ties only
    assert pretrained.inference_precision(squeezenet, "auto", "cpu") == "fp32"
    assert pretrained.inference_precision("vgg16", "auto", "cpu") == "bf16"
    assert pretrained.classify(images[:8], model=squeezenet, top=2) == top2["fp32"][:8]  # auto: fp32, exactly


# --------------------------------------------------------------------- VGG-16, light

def test_vgg16_loads_a_torchvision_keyed_state_dict(monkeypatch):
    torch.manual_seed(0)
    state = vgg16().state_dict()  # random, torchvision's init, torchvision's keys
    monkeypatch.setattr(pretrained, "load_state_dict", lambda path: state)
    model = pretrained.load_pretrained("vgg16", weights="random.pth")
    assert count_params(model) == 138_357_544
    assert model.features[0].weight.data_ptr() == state["features.0.weight"].data_ptr()  # taken, not copied
    with torch.inference_mode():
        out = model(torch.rand(1, 3, 224, 224))
    assert out.shape == (1, 1000) and torch.isfinite(out).all()


# ------------------------------------------------------------------ bad weights files

def test_wrong_architecture_says_which_keys_differ(squeeze_weights):
    with pytest.raises(CnnlabError, match=r"do not fit vgg16: missing \(30\): features.2.weight, features.2.bias, "
                                          r"features.5.weight, ...; unexpected \(50\): classifier.1.weight, .*; "
                                          r"pass vgg16 weights .* or pick the matching --model"):
        pretrained.load_pretrained("vgg16", weights=squeeze_weights)


def test_mis_shaped_weights_are_named(tmp_path):
    state = squeezenet1_1(num_classes=10).state_dict()
    del state["features.0.bias"]
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "ten.pth")
    with pytest.raises(CnnlabError, match=r"missing \(1\): features.0.bias; unexpected \(1\): extra.weight; "
                                          r"mis-shaped \(2\): classifier.1.weight \(10, 512, 1, 1\) vs "
                                          r"\(1000, 512, 1, 1\)"):
        pretrained.load_pretrained("squeezenet1_1", weights=tmp_path / "ten.pth")


def test_truncated_file(squeeze_weights, tmp_path):
    cut = tmp_path / "cut.pth"
    cut.write_bytes(squeeze_weights.read_bytes()[:100_000])
    with pytest.raises(CnnlabError, match=r"cannot read weights '.*cut.pth'.*truncated"):
        pretrained.load_pretrained("squeezenet1_1", weights=cut)


def test_missing_and_non_state_dict_files(tmp_path):
    with pytest.raises(CnnlabError, match="not found"):
        pretrained.load_state_dict(tmp_path / "nope.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(CnnlabError, match="not a state dict"):
        pretrained.load_state_dict(tmp_path / "list.pth")
    with pytest.raises(CnnlabError, match="no pretrained network 'resnet50'"):
        pretrained.load_pretrained("resnet50")


# ---------------------------------------------------------------------------- download

def test_download_verifies_the_hash_and_caches(cache, monkeypatch):
    data = b"pretend weights" * 1000
    calls = []
    monkeypatch.setattr(pretrained, "_urlopen", serve(data, calls))
    url = f"https://example.invalid/models/tiny-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    path = pretrained.download_weights(url, progress=False)
    assert path == cache / url.rsplit("/", 1)[1] and path.read_bytes() == data
    assert pretrained.download_weights(url, progress=False) == path and len(calls) == 1  # cached
    assert sorted(p.name for p in cache.iterdir()) == [path.name]


def test_download_with_a_bad_hash_leaves_nothing(cache, monkeypatch):
    monkeypatch.setattr(pretrained, "_urlopen", serve(b"corrupt bytes"))
    with pytest.raises(CnnlabError, match="corrupt: sha256 .* does not start with 0123abcd"):
        pretrained.download_weights("https://example.invalid/tiny-0123abcd.pth", progress=False)
    assert list(cache.iterdir()) == []


def test_offline_without_weights_names_the_url_and_the_option(cache, monkeypatch):
    def offline(url, timeout=None):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(pretrained, "_urlopen", offline)
    with pytest.raises(CnnlabError, match=r"cannot download https://download.pytorch.org/models/vgg16-397923af.pth "
                                          r"\(Name or service not known\).*--weights PATH"):
        pretrained.load_pretrained("vgg16", progress=False)
    assert list(cache.iterdir()) == []


def test_first_use_downloads_then_loads(cache, monkeypatch, squeeze_weights):
    data = squeeze_weights.read_bytes()
    url = f"https://example.invalid/squeezenet1_1-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    monkeypatch.setitem(pretrained.URLS, "squeezenet1_1", url)
    monkeypatch.setattr(pretrained, "_urlopen", serve(data))
    model = pretrained.load_pretrained("squeezenet1_1", progress=False)
    assert (cache / url.rsplit("/", 1)[1]).is_file() and count_params(model) == 1_235_496


# ----------------------------------------------------------------------- preprocessing

def test_torchvision_preprocessing_of_a_grey_photo():
    x = pretrained.preprocess(Image.new("L", (300, 400), 128))
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    expected = (128 / 255 - torch.tensor(pretrained.IMAGENET_MEAN)) / torch.tensor(pretrained.IMAGENET_STD)
    torch.testing.assert_close(x[:, 100, 100], expected)


def test_caffe_preprocessing_is_bgr_0_255_minus_mean():
    red = np.zeros((256, 256, 3), np.uint8)
    red[..., 0] = 255
    x = pretrained.preprocess(red, style="caffe")
    torch.testing.assert_close(x[:, 0, 0], torch.tensor([-103.939, -116.779, 255 - 123.68]))


def test_centre_crop_of_a_wide_photo():
    img = np.zeros((256, 512, 3), np.uint8)  # short side already 256: no resampling
    img[:, 256:] = 255
    x = pretrained.preprocess(img, style="caffe") + torch.tensor(pretrained.CAFFE_BGR_MEAN).view(3, 1, 1)
    assert (x[:, :, :112] < 1).all() and (x[:, :, 112:] > 254).all()


def test_non_image_and_bad_arguments(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a photo")
    with pytest.raises(CnnlabError, match=r"'.*notes.txt' is not a readable image"):
        pretrained.classify(text, weights="unused.pth")
    with pytest.raises(CnnlabError, match="not found"):
        pretrained.preprocess(tmp_path / "missing.jpg")
    with pytest.raises(CnnlabError, match="style 'keras'"):
        pretrained.preprocess(text, style="keras")
    with pytest.raises(CnnlabError, match="top 0"):
        pretrained.classify(text, top=0)
    with pytest.raises(CnnlabError, match="empty"):
        pretrained.classify([])
    with pytest.raises(CnnlabError, match="not uint8"):
        pretrained.preprocess(np.zeros((8, 8, 3), np.float32))


def test_plot_predictions_returns_a_figure():
    preds = [[(285, "Egyptian_cat", 0.7), (281, "tabby", 0.2)], [(457, "bow_tie", 0.5), (834, "suit", 0.3)]]
    fig = pretrained.plot_predictions(preds, images=[np.zeros((8, 8), np.uint8)] * 2, titles=["a", "b"])
    assert isinstance(fig, Figure) and len(fig.axes) == 4
    with pytest.raises(CnnlabError, match="1 images for 2 predictions"):
        pretrained.plot_predictions(preds, images=[np.zeros((8, 8), np.uint8)])
