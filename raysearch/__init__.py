"""raysearch: hyperparameter searches and ablation studies for self-supervised image
anomaly detection (distcon, cutswap, clflow) on Ray Train and Ray Tune with Optuna.

``import raysearch`` stays light: it imports neither torch nor ray. The pieces:

- :mod:`raysearch.config.spec` — the YAML experiment spec, validated into frozen dataclasses;
- :mod:`raysearch.config.registry` — method name -> method class (lazy);
- :mod:`raysearch.data` — datasets, the one-class protocol, batched augmentation;
- :mod:`raysearch.train.loop` / :mod:`raysearch.train.worker` — the training loop and Ray Train;
- :mod:`raysearch.store.results` — the Parquet results store.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
