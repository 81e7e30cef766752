"""metaopt-tuner: meta-learned initial weights and per-weight learning rates as an optimizer.

The public API, and nothing else, is re-exported here. The package's layers, lowest first: leaf
helpers, the update rule, the configuration, ``models``, ``tasks``, ``learners``, ``artifact``,
``training``, ``registry``, the resolver, ``optim`` and ``evaluation``, ``compare``, ``tracking``
(``pyproject.toml``'s import-linter contracts check that imports only point down).
"""

from __future__ import annotations

from . import _compat
from .artifact import Artifact, list_pretrained, load_artifact, pretrained
from .config import TrainConfig
from .errors import (
    ArtifactError,
    ConfigError,
    DataError,
    DistributedError,
    EncoderMismatchError,
    MetaOptError,
    MetaOptWarning,
    MissingExtraError,
    ModelMismatchError,
    NonFiniteLossError,
    NonFiniteUpdateError,
    RegistryError,
    RegistryUnavailableError,
    RunDirError,
    StudyStorageError,
    SuiteError,
)
from .evaluation import EvaluationResult, evaluate, mean_ci
from .learners import (
    FOMAML,
    MAML,
    LearningRates,
    MetaLearner,
    MetaSGDLearner,
    Reptile,
    adapt,
    build_learner,
    list_learners,
)
from .models import MLP, ConvNet, FeatureClassifier, build_model, prototype_head, prototype_head_
from .optim import MetaSGD, prepare
from .registry import list_versions, load_registered, publish, set_alias
from .tasks import (
    ClassificationSuite,
    Task,
    TaskBatch,
    TaskSuite,
    get_suite,
    list_suites,
    register_suite,
)
from .tracking import RunTracker, track_training
from .training import CompiledMetaGradient, GraphedMetaGradient, MetaTrainer, TrainResult, train
from .version import __version__

_compat.install()  # old import paths keep working for one release

__all__ = [
    "__version__",
    # errors
    "MetaOptError",
    "ConfigError",
    "SuiteError",
    "DataError",
    "RunDirError",
    "NonFiniteLossError",
    "NonFiniteUpdateError",
    "ArtifactError",
    "ModelMismatchError",
    "EncoderMismatchError",
    "DistributedError",
    "StudyStorageError",
    "RegistryError",
    "RegistryUnavailableError",
    "MissingExtraError",
    "MetaOptWarning",
    # tasks
    "Task",
    "TaskBatch",
    "TaskSuite",
    "ClassificationSuite",
    "get_suite",
    "list_suites",
    "register_suite",
    # models
    "MLP",
    "ConvNet",
    "FeatureClassifier",
    "build_model",
    # learners
    "MetaLearner",
    "MAML",
    "FOMAML",
    "MetaSGDLearner",
    "Reptile",
    "LearningRates",
    "adapt",
    "build_learner",
    "list_learners",
    "prototype_head",
    "prototype_head_",
    # training
    "TrainConfig",
    "TrainResult",
    "MetaTrainer",
    "train",
    "CompiledMetaGradient",
    "GraphedMetaGradient",
    # artifacts, the optimizer, evaluation
    "Artifact",
    "load_artifact",
    "pretrained",
    "list_pretrained",
    "MetaSGD",
    "prepare",
    "evaluate",
    "EvaluationResult",
    "mean_ci",
    # MLflow tracking and the model registry (the mlflow extra)
    "RunTracker",
    "track_training",
    "publish",
    "load_registered",
    "list_versions",
    "set_alias",
]
