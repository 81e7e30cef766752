"""Reference architectures: the MLP, the ConvNet, the feature classifier, the prototype head and
the text models (``models.text``), built by name from a spec (``build_model``)."""

from __future__ import annotations

from .proto_head import (
    HEAD_BIAS,
    HEAD_INITS,
    HEAD_WEIGHT,
    prototype_head,
    prototype_head_,
    supports_prototype_head,
)
from .reference import (
    CONVNET_NORMS,
    GROUP_SIZE,
    MLP,
    BatchNorm2dStats,
    ConvNet,
    FeatureClassifier,
    build_model,
    check_convnet_options,
    complete_spec,
    register_model,
    supports_batched,
)

__all__ = [
    "MLP",
    "ConvNet",
    "FeatureClassifier",
    "BatchNorm2dStats",
    "CONVNET_NORMS",
    "GROUP_SIZE",
    "build_model",
    "register_model",
    "complete_spec",
    "check_convnet_options",
    "supports_batched",
    "HEAD_INITS",
    "HEAD_WEIGHT",
    "HEAD_BIAS",
    "prototype_head",
    "prototype_head_",
    "supports_prototype_head",
]
