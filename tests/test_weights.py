"""Weights that decode to nonsense (NaN, infinity, integers, foreign checkpoints) are refused in one line."""

from __future__ import annotations

import json

import pytest
import torch

from cnnlab.errors import CnnlabError
from cnnlab.models import build, pretrained
from cnnlab.models.squeezenet import squeezenet1_1
from cnnlab.models.weights import check_state_dict
from cnnlab.runs.directory import load_run

SPEC = "conv4k3-relu,maxpool2,flatten,dense3"


def small_state():
    torch.manual_seed(0)
    return build(SPEC, input_shape=(8, 8, 1)).state_dict()


def check(state):
    check_state_dict(build(SPEC, input_shape=(8, 8, 1)), state, source="'w.pt'", name="net", fix="train again")


def test_good_weights_pass():
    check(small_state())


@pytest.mark.parametrize("value, count", [(float("nan"), 1), (float("inf"), 1), (-float("inf"), 4)])
def test_nan_and_infinite_values_are_refused_naming_the_tensor(value, count):
    state = small_state()
    state["0.weight"].view(-1)[:count] = value
    with pytest.raises(CnnlabError, match=rf"weights 'w.pt': 0.weight holds {count} NaN or infinite value\(s\) "
                                          r"of 36; .*train again") as info:
        check(state)
    assert "\n" not in str(info.value)


def test_integer_weights_are_refused():
    state = small_state()
    state["4.weight"] = state["4.weight"].round().to(torch.int64)  # load_state_dict would cast these silently
    with pytest.raises(CnnlabError, match=r"4.weight has dtype torch.int64 where net needs floating point"):
        check(state)


def test_integer_buffers_the_model_has_are_fine():
    model = build("conv4k3-bn-relu,flatten,dense3", input_shape=(8, 8, 1))
    state = model.state_dict()
    assert state["1.num_batches_tracked"].dtype == torch.int64
    check_state_dict(model, state, source="x", name="net", fix="")


def test_not_a_state_dict():
    with pytest.raises(CnnlabError, match=r"weights 'w.pt' hold a list, not a state dict of tensors; train again"):
        check([1, 2])
    with pytest.raises(CnnlabError, match=r"hold a dict, not a state dict"):
        check({"epoch": 3, "weights": torch.zeros(2)})


def test_pretrained_weights_full_of_nan_are_refused(tmp_path):
    state = squeezenet1_1().state_dict()
    state["classifier.1.weight"].fill_(float("nan"))
    torch.save(state, tmp_path / "nan.pth")
    with pytest.raises(CnnlabError, match=r"classifier.1.weight holds 512000 NaN or infinite value\(s\) of 512000"):
        pretrained.load_pretrained("squeezenet1_1", weights=tmp_path / "nan.pth")


def make_run(path, weights):
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"model": SPEC, "input_shape": [8, 8, 1], "num_classes": 3,
                                                  "classes": ["a", "b", "c"], "data": "mnist"}))
    torch.save(weights, path / "best.pt")
    return load_run(path)


def test_run_checkpoints_with_nan_or_foreign_contents_are_refused(tmp_path):
    bad = small_state()
    bad["0.bias"][0] = float("nan")
    with pytest.raises(CnnlabError, match=r"best.pt: 0.bias holds 1 NaN .*delete it to fall back"):
        make_run(tmp_path / "nan", bad).build_model()
    foreign = {"fc.weight": torch.zeros(3, 3)}  # loads with weights_only, but is not this run's model
    with pytest.raises(CnnlabError, match=r"best.pt do not fit conv4k3.*missing \(4\).*unexpected \(1\): fc.weight"):
        make_run(tmp_path / "foreign", foreign).build_model()
    assert make_run(tmp_path / "good", small_state()).build_model().training is False
