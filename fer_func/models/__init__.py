"""Model registry: ``build(name, **knobs)`` turns a family name and its knobs into a :class:`Model`.

Each entry is a family class, the knobs a study may set (with their defaults) and the settings that
define the family but are not knobs. The six families of the FER2013 study:

- ``mlp`` (01), ``simple_cnn`` (02), ``large_cnn`` (03), ``regularized_cnn`` (04/05) and ``tiny_cnn``
  (07) are presets of :class:`~fer_func.models.convnet.ConvNet` / :class:`~fer_func.models.mlp.MLP`;
- ``resnet`` (06) is :class:`~fer_func.models.resnet.ResNet` (ResNet-18 with a 48px stem).
"""
from __future__ import annotations

from fer_func.config import ConfigError, ModelConfig
from fer_func.models.base import INPUT_SHAPE, KNOBS, NUM_CLASSES, Model
from fer_func.models.convnet import ConvNet
from fer_func.models.mlp import MLP
from fer_func.models.resnet import ResNet

# name: (family, {knob: default}, {fixed setting: value})
FAMILIES = {
    "mlp": (MLP, dict(hidden=(512, 256, 128), dropout=0.0), {}),
    "simple_cnn": (ConvNet, dict(channels=(32, 64), convs_per_block=1, fc=(128, 64), dropout_fc=0.0), {}),
    "large_cnn": (ConvNet, dict(channels=(64, 128, 256, 512, 512), convs_per_block=2, fc=(1024, 512)), {}),
    "regularized_cnn": (ConvNet, dict(channels=(32, 64, 128, 256), convs_per_block=2, fc=(256,),
                                      dropout_conv=0.2, dropout_fc=0.5), dict(batch_norm=True)),
    "resnet": (ResNet, dict(stem=64, stages=(64, 128, 256, 512), blocks=2), {}),
    "tiny_cnn": (ConvNet, dict(channels=(16,), convs_per_block=1, fc=()), {}),
}
KNOBS.update({name: tuple(defaults) for name, (_, defaults, _) in FAMILIES.items()})  # Model.knobs reads it


def _freeze(value):
    # Lists from YAML/JSON become tuples, so a built model is hashable (a compile-cache key).
    return tuple(value) if isinstance(value, list) else value


def build(name: str, **knobs) -> Model:
    """The model ``name`` with ``knobs`` overriding its defaults; unknown names and knobs raise ConfigError."""
    if name not in FAMILIES:
        raise ConfigError(f"model.name = {name!r}: unknown model; choose one of {', '.join(FAMILIES)}")
    family, defaults, fixed = FAMILIES[name]
    for knob in knobs:
        if knob not in defaults:
            raise ConfigError(f"model {name!r} has no knob {knob!r}; its knobs are {', '.join(defaults)}")
    values = {k: _freeze(v) for k, v in (defaults | knobs).items()}
    return family(name=name, **values, **fixed)


def build_from(config: ModelConfig) -> Model:
    return build(config.name, **config.knobs)


__all__ = ["FAMILIES", "INPUT_SHAPE", "NUM_CLASSES", "Model", "build", "build_from"]
