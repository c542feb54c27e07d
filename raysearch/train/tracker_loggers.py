"""Ray's MLflow and W&B logger callbacks, given what a person watches of a report.

Each passes :func:`raysearch.train.trackers.tracker_values` of a report to Ray's own callback:
the objective's running means, the evaluation's validation metrics and loss terms, the
progress and epoch, without Ray's bookkeeping or any test metric. Imported only where
``--log`` names a tracker (it imports ray); Tune pickles the callbacks with the
experiment, so a resumed run keeps them.
"""

from __future__ import annotations

from typing import Any

from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.air.integrations.wandb import WandbLoggerCallback

from raysearch.train.trackers import tracker_values

__all__ = ["MLflowLogger", "WandbLogger"]


class MLflowLogger(MLflowLoggerCallback):
    """Ray's MLflow callback, sent :func:`raysearch.train.trackers.tracker_values` of each report."""

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        super().log_trial_result(iteration, trial, tracker_values(result))


class WandbLogger(WandbLoggerCallback):
    """Ray's W&B callback, sent :func:`raysearch.train.trackers.tracker_values` of each report."""

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        super().log_trial_result(iteration, trial, tracker_values(result))
