"""Transfer learning: an ImageNet network with a new classifier for your classes.

``pretrained_model(name, num_classes=K)`` builds the zoo network for K classes (so its
head is exactly what ``build(name, num_classes=K)`` makes, and a run directory rebuilds it
with ``build``), then loads the ImageNet weights into everything except that head, which
keeps its fresh initialisation. Inputs must then be prepared as the weights expect:
RGB in [0, 1], minus ``IMAGENET_MEAN``, over ``IMAGENET_STD``.

``head_of(model)`` names the new classifier layer of each transferable network; the rest
is the "body" that ``cnnlab.train.finetune`` freezes first.
"""

from __future__ import annotations

from torch import nn

from cnnlab.errors import CnnlabError

# The layer replaced for new classes, by network: its state-dict prefix.
HEADS = {
    "squeezenet1_1": "classifier.1",  # the final 1x1 conv (512 -> classes)
    "vgg16": "classifier.6",
    "resnet18": "fc",
    "mobilenet_v3_small": "classifier.3",
}


def head_of(model: nn.Module) -> nn.Module:
    """The new classifier layer of a transferable network (see ``HEADS``), found by its class."""
    from cnnlab.models.mobilenet import MobileNetV3
    from cnnlab.models.resnet import ResNet
    from cnnlab.models.squeezenet import SqueezeNet
    from cnnlab.models.vgg import VGG

    kinds = {SqueezeNet: "squeezenet1_1", VGG: "vgg16", ResNet: "resnet18", MobileNetV3: "mobilenet_v3_small"}
    for cls, name in kinds.items():
        if isinstance(model, cls):
            return model.get_submodule(HEADS[name])
    raise CnnlabError(f"no known head in a {type(model).__name__}; pass fit(..., head=model.<classifier layer>) "
                      f"or use one of {', '.join(HEADS)}")


def pretrained_model(name: str, *, num_classes: int, input_shape=(224, 224, 3), weights=None,
                     progress: bool = True) -> nn.Module:
    """``build(name, ...)`` for ``num_classes`` with ImageNet weights in all but its new head.

    ``weights``: a torchvision-keyed state-dict file; None finds torchvision's file in torch
    hub's cache or downloads it (``cnnlab.models.pretrained.download_weights``).
    """
    from cnnlab.models import build
    from cnnlab.models.pretrained import URLS, download_weights, load_state_dict
    from cnnlab.models.weights import check_state_dict

    if name not in HEADS:
        raise CnnlabError(f"--pretrained is available for {', '.join(HEADS)}, not {name!r}")
    if tuple(input_shape)[2:] != (3,):
        raise CnnlabError(f"ImageNet weights take RGB images, got input shape {tuple(input_shape)}; "
                          "load the folder with mode='RGB'")
    path = download_weights(URLS[name], progress=progress) if weights is None else weights
    state = load_state_dict(path)
    model = build(name, input_shape=input_shape, num_classes=num_classes)
    prefix = HEADS[name] + "."
    head_keys = [k for k in model.state_dict() if k.startswith(prefix)]
    with_head = {**state, **{k: v for k, v in model.state_dict().items() if k in head_keys}}
    check_state_dict(model, with_head, source=repr(str(path)), name=name,  # the body must be the ImageNet net's
                     fix=f"pass {name} weights (torchvision keys) or pick the matching --model")
    body = {k: v.float() if v.is_floating_point() else v for k, v in state.items() if not k.startswith(prefix)}
    model.load_state_dict({**model.state_dict(), **body})
    return model
