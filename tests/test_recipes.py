"""Every recipe is a valid configuration whose model builds for its dataset."""

import pytest
import torch

from cnnlab.errors import CnnlabError
from cnnlab.models import build
from cnnlab.train.config import RECIPES, get_recipe

SHAPES = {"mnist": (28, 28, 1), "cifar10": (32, 32, 3)}


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_model_builds_and_runs(name):
    recipe = RECIPES[name]
    model = build(recipe.model, input_shape=SHAPES[recipe.data], num_classes=10)
    h, w, c = SHAPES[recipe.data]
    with torch.no_grad():
        assert model.eval()(torch.zeros(2, c, h, w)).shape == (2, 10)


def test_unknown_recipe_lists_the_known_ones():
    with pytest.raises(CnnlabError, match="unknown recipe 'mnist'; known recipes: .*mnist-fast"):
        get_recipe("mnist")
