"""metaopt-tuner: meta-learned initial weights and per-weight learning rates as an optimizer.

The public API, and nothing else, is re-exported here.
"""

from __future__ import annotations

from .artifact import Artifact, list_pretrained, load_artifact, pretrained
from .compiled import CompiledMetaGradient
from .cuda_graphs import GraphedMetaGradient
from .errors import (
    ArtifactError,
    ConfigError,
    DataError,
    DistributedError,
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
from .learners.proto_head import prototype_head, prototype_head_
from .models import MLP, ConvNet, FeatureClassifier, build_model
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
from .training import MetaTrainer, TrainConfig, TrainResult, train

__version__ = "0.1.0"

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
