"""The model registry: artifacts published to MLflow (``mlflow_store``), loaded back through a
verified local cache (``model_cache``); ``publish`` is the API."""

from __future__ import annotations

from . import mlflow_store, model_cache
from .publish import *  # noqa: F403  (the registry's API, listed in publish.__all__)
from .publish import __all__ as _publish_all

__all__ = [*_publish_all, "mlflow_store", "model_cache"]
