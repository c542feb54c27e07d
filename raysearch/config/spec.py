"""The experiment spec: one YAML file that says what to train, on what, and how to search.

A spec is loaded with ``yaml.safe_load`` into frozen dataclasses. Every key is checked:
an unknown key, a wrong type or a value outside its allowed set raises
:class:`~raysearch.config.schema.SpecError`, whose message names the file, the dotted key and
what is allowed. Method hyperparameters live under ``params`` with dotted names
(``gmm.components: 4``) and are checked against the method's own parameter dataclass,
which also holds their defaults.

Example:
    >>> spec = load_spec("search_spaces/demo/distcon.yaml", ["train.epochs=2"])  # doctest: +SKIP
    >>> spec.train.epochs                                                       # doctest: +SKIP
    2
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from raysearch.config import registry
from raysearch.config.schema import SpecError, build, flatten, param, to_dict

__all__ = [
    "DataSpec",
    "SelectionSpec",
    "TrainSpec",
    "Spec",
    "SpecError",
    "load_spec",
    "spec_from_dict",
    "parse_set",
    "config_hash",
]


@dataclass(frozen=True)
class DataSpec:
    dataset: str = "digits"  # a name from `raysearch datasets`
    root: str = "~/data"  # where the dataset's files are (unused by built-in datasets)
    classes: Any = "all"  # "all" or a list of normal classes / categories, run in this order
    image_size: int = 32  # images are resized to image_size x image_size pixels
    download: bool = False  # let torchvision download CIFAR when the files are missing
    max_train: int | None = None  # cap on training normals per class (small runs, tests)
    max_test: int | None = None  # cap on test images per class, stratified (small runs, tests)

    def validate(self) -> None:
        from raysearch.data import DATASETS

        if self.dataset not in DATASETS:
            raise SpecError(
                f"unknown dataset {self.dataset!r}; known: {', '.join(sorted(DATASETS))}",
                key="dataset",
            )
        if self.classes != "all":
            if not isinstance(self.classes, (list, tuple)) or not self.classes:
                raise SpecError(
                    f'expected "all" or a non-empty list of classes, got {self.classes!r}',
                    key="classes",
                )
            object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))
        if not 8 <= self.image_size <= 1024:
            raise SpecError(f"expected 8..1024 pixels, got {self.image_size}", key="image_size")
        for key in ("max_train", "max_test"):
            value = getattr(self, key)
            if value is not None and value < 4:
                raise SpecError(f"expected at least 4 images or null, got {value}", key=key)


@dataclass(frozen=True)
class SelectionSpec:
    """How the best epoch of a run (and so every ranking) is chosen; see raysearch.config.selection."""

    # validation: select on a split made from training data only (leakage-free);
    # test: paper-style selection on the test set, flagged in every result row.
    split: Literal["validation", "test"] = "validation"
    # What the validation anomalies are: synthetic (the `synthesis` families, made from
    # held-out normals), other_classes (held-out training images of the other classes;
    # datasets of classes only), both (other_classes is then one more family), or auto:
    # other_classes for datasets of classes (their test anomalies are other classes),
    # synthetic for datasets of categories (MVTec-like defects). Resolved at load time.
    anomalies: Literal["auto", "synthetic", "other_classes", "both"] = "auto"
    # Synthetic families of the validation split (raysearch.config.selection.SYNTHETIC_FAMILIES).
    # null = every known family that no configuration of the spec trains on (its values,
    # each choice of its search space, each ablation factor), resolved at load time.
    synthesis: Any = None
    allow_overlap: bool = False  # accept families that some configuration trains on (recorded in rows)
    holdout: float = 0.1  # fraction of training normals held out for validation
    min_normals: int = 20  # floor on held-out normals (at most half of the training normals)
    min_anomalies: int = 100  # anomalies per family, made from held-out normals drawn with replacement
    seed: int = 0  # fixes the hold-out, the test subset and the synthesis; independent of train.seed
    # The validation metric that picks each class's best epoch (ties: the later epoch).
    # null = the search's first objective when it is a val_* metric, else the default
    # objective (raysearch.config.selection.DEFAULT_OBJECTIVE, val_image_auroc).
    metric: str | None = None

    def validate(self) -> None:
        from raysearch.config.selection import SYNTHETIC_FAMILIES

        if not 0.0 < self.holdout < 0.9:
            raise SpecError(f"expected a fraction in (0, 0.9), got {self.holdout}", key="holdout")
        if self.synthesis is not None:
            names = self.synthesis
            if isinstance(names, str):
                names = [t for t in names.split("+") if t]
            if (not isinstance(names, (list, tuple)) or not names or len(set(names)) != len(names)
                    or any(n not in SYNTHETIC_FAMILIES for n in names)):
                raise SpecError(f"expected a non-empty list of distinct families from {', '.join(SYNTHETIC_FAMILIES)}, "
                                f"got {self.synthesis!r}", key="synthesis")
            object.__setattr__(self, "synthesis", tuple(names))
        if self.min_normals < 2:
            raise SpecError(f"expected at least 2, got {self.min_normals}", key="min_normals")
        if self.min_anomalies < 1:
            raise SpecError(f"expected at least 1, got {self.min_anomalies}", key="min_anomalies")


@dataclass(frozen=True)
class TrainSpec:
    epochs: int = 10
    batch_size: int = 128  # images per optimizer step, over all workers
    lr: float = 1e-3  # peak learning rate (cosine decay to 0 over the epochs)
    weight_decay: float = 0.0
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    momentum: float = 0.9  # sgd only
    warmup_epochs: int = 0  # linear learning-rate warm-up
    eval_every: int = 1  # epochs between validation evaluations (and checkpoints)
    workers: int = 1  # Ray Train workers (DDP when > 1)
    gpus_per_worker: float = 0.0  # 0 = CPU; fractions share one GPU between trials
    # CPUs each worker holds (its Ray resource request). null: 1, except in `raysearch
    # train` of a CPU run (gpus_per_worker 0) on a local Ray, whose workers share the free
    # CPUs of the machine (floor(free / workers), at least 1). See worker_cpus.
    cpus_per_worker: float | None = None
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto = bf16 autocast on GPU
    seed: int = 0
    checkpoint: bool = True  # keep the best and the last checkpoint per class
    # Restarts of a run's worker group after a failure (a lost worker or node, a crash):
    # it resumes from the last evaluation's checkpoint; a sweep also retries a trial
    # whose driver was lost once. Set it (e.g. 2) on clusters with spot instances. A
    # diverged loss fails again on every restart.
    max_failures: int = 0
    # How sweep and ablation trials run: `auto` trains a single-worker trial in a Tune
    # trial process, reused from one trial to the next (no process or worker group to
    # start per trial), and several workers through Ray Train; `fresh` is `auto` with a
    # new process for every trial; `train` always goes through Ray Train. `raysearch
    # train` always uses Ray Train. See docs/DESIGN.md ("Trial launch").
    launcher: Literal["auto", "fresh", "train"] = "auto"
    # Speed options: none of them changes what is computed (see README, "Performance").
    compile: bool = param(False, help="torch.compile the method's model for the training steps")
    compile_backend: Literal["inductor", "eager", "aot_eager", "cudagraphs"] = param(
        "inductor", help="torch.compile backend (eager: graph capture only, for tests and debugging)"
    )
    channels_last: bool = param(False, help="model weights and 4D input batches in channels_last memory format")
    data_on_device: Literal["auto", True, False] = param(
        "auto", help="training images on the device for the whole run (false: stream pinned batches)"
    )
    data_on_device_fraction: float = param(
        0.25, gt=0, le=1,
        help="auto: on a GPU when the training images take at most this fraction of its free memory",
    )
    threads: int | None = param(
        None, ge=1,
        help="torch intra-op threads of each worker; null = the CPUs it holds (cpus_per_worker rounded down, >= 1)",
    )

    def validate(self) -> None:
        for key in ("epochs", "batch_size", "eval_every", "workers"):
            if getattr(self, key) < 1:
                raise SpecError(f"expected a positive integer, got {getattr(self, key)}", key=key)
        for key in ("lr", "weight_decay", "momentum", "gpus_per_worker", "cpus_per_worker"):
            value = getattr(self, key)
            if value is not None and not math.isfinite(value):
                raise SpecError(f"expected a finite number, got {value}", key=key)
        if self.lr <= 0:
            raise SpecError(f"expected a positive number, got {self.lr}", key="lr")
        if self.weight_decay < 0:
            raise SpecError(f"expected >= 0, got {self.weight_decay}", key="weight_decay")
        if self.gpus_per_worker < 0:
            raise SpecError(f"expected >= 0, got {self.gpus_per_worker}", key="gpus_per_worker")
        if self.cpus_per_worker is not None and self.cpus_per_worker <= 0:
            raise SpecError(f"expected a positive number or null, got {self.cpus_per_worker}", key="cpus_per_worker")
        if self.max_failures < 0:
            raise SpecError(f"expected >= 0, got {self.max_failures}", key="max_failures")
        if self.warmup_epochs < 0:
            raise SpecError(f"expected >= 0, got {self.warmup_epochs}", key="warmup_epochs")

    def worker_cpus(self, free_cpus: float | None = None) -> float:
        """The CPUs each worker holds: ``cpus_per_worker``, or where that is null, 1 or, given
        ``free_cpus`` (``raysearch train`` of a CPU run on a local Ray), the free CPUs shared
        by the workers.

        Example:
            >>> TrainSpec().worker_cpus(), TrainSpec().worker_cpus(free_cpus=8), TrainSpec(workers=3).worker_cpus(8)
            (1.0, 8.0, 2.0)
        """
        if self.cpus_per_worker is not None:
            return float(self.cpus_per_worker)
        if free_cpus is None or self.gpus_per_worker > 0:
            return 1.0
        return float(max(1, math.floor(free_cpus / self.workers)))

    def worker_threads(self, cpus: float) -> int:
        """torch threads of a worker that holds ``cpus`` CPUs: ``threads``, else ``cpus`` rounded down, at least 1.

        Example:
            >>> TrainSpec().worker_threads(2.5), TrainSpec().worker_threads(0.5), TrainSpec(threads=4).worker_threads(1)
            (2, 1, 4)
        """
        return self.threads if self.threads is not None else max(1, math.floor(cpus))


TOP_LEVEL_KEYS = (
    "name",
    "method",
    "params",
    "data",
    "selection",
    "train",
    "search",
    "ablations",
    "provenance",
)


@dataclass(frozen=True)
class Spec:
    """A resolved experiment: every value filled in, defaults included."""

    name: str
    method: str
    params: Any  # the method's frozen parameter dataclass
    data: DataSpec = field(default_factory=DataSpec)
    selection: SelectionSpec = field(default_factory=SelectionSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    search: Mapping[str, Any] = field(default_factory=dict)  # checked by raysearch.run.tuning
    ablations: Mapping[str, Any] = field(default_factory=dict)  # checked by raysearch.run.ablation
    provenance: Mapping[str, Any] = field(default_factory=dict)  # free-form, carried along
    source: str = "<spec>"  # the file it came from

    def to_dict(self) -> dict[str, Any]:
        """The full resolved spec as plain data (what is written beside results)."""
        out = {k: to_dict(getattr(self, k)) for k in TOP_LEVEL_KEYS}
        out["params"] = flatten(self.params)
        return out

    def flat_config(self) -> dict[str, Any]:
        """Dotted view of everything a run depends on: ``params.*``, ``train.*``, ``data.*``..."""
        out: dict[str, Any] = {"method": self.method}
        for section in ("params", "data", "selection", "train"):
            for key, value in flatten(getattr(self, section)).items():
                out[f"{section}.{key}"] = value
        return out

    def with_overrides(self, updates: Mapping[str, Any]) -> Spec:
        """A new spec with dotted overrides (``params.gmm.components``, ``train.lr``) applied."""
        raw = self.to_dict()
        for key, value in updates.items():
            _set_dotted(raw, key, value)
        return spec_from_dict(raw, source=self.source)

    def classes(self) -> list[str]:
        """The normal classes to run, in the spec's fixed order."""
        from raysearch.data import list_classes

        return list_classes(self.data)


def _set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    section, dot, rest = key.partition(".")
    if section not in TOP_LEVEL_KEYS:
        raise SpecError(f"unknown key; allowed top-level keys: {', '.join(TOP_LEVEL_KEYS)}", key=key)
    if not dot:
        raw[section] = value
        return
    if section == "params":
        raw.setdefault("params", {})
        raw["params"] = dict(raw["params"] or {})
        raw["params"][rest] = value
        return
    node = raw.setdefault(section, {})
    if node is None:
        node = raw[section] = {}
    parts = rest.split(".")
    # Entries of the search space and of ablation factors are dotted spec keys themselves:
    # everything after their prefix is one key (as under params).
    if section == "search" and parts[0] == "space" and len(parts) > 1:
        parts = ["space", ".".join(parts[1:])]
    elif section == "ablations" and parts[0] == "factors" and len(parts) > 2:
        parts = ["factors", parts[1], ".".join(parts[2:])]
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


def spec_from_dict(raw: Mapping[str, Any], source: str = "<spec>") -> Spec:
    """Validate a spec mapping (as read from YAML) into a :class:`Spec`."""
    try:
        return _spec_from_dict(raw, source)
    except SpecError as err:
        raise err.located(source) from None


def _spec_from_dict(raw: Mapping[str, Any], source: str) -> Spec:
    if not isinstance(raw, Mapping):
        raise SpecError(f"expected a mapping at the top level, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(TOP_LEVEL_KEYS))
    if unknown:
        raise SpecError(
            f"unknown key; allowed top-level keys: {', '.join(TOP_LEVEL_KEYS)}", key=unknown[0]
        )
    for key in ("name", "method"):
        if not isinstance(raw.get(key), str) or not raw.get(key):
            raise SpecError("required; expected a non-empty string", key=key)
    if not NAME_PATTERN.fullmatch(raw["name"]) or raw["name"] in (".", ".."):
        # The name is a folder under --storage: it must stay inside it.
        raise SpecError(f"expected a plain name (letters, digits, '-', '_', '.'; no path separator), "
                        f"got {raw['name']!r}", key="name")
    method = raw["method"]
    params_cls = registry.params_class(method)  # raises SpecError listing the known methods
    params_raw = raw.get("params") or {}
    if not isinstance(params_raw, Mapping):
        raise SpecError(f"expected a mapping of dotted names, got {params_raw!r}", key="params")
    params = build(params_cls, params_raw, prefix="params")
    sections = {}
    for key, cls in (("data", DataSpec), ("selection", SelectionSpec), ("train", TrainSpec)):
        value = raw.get(key) or {}
        if not isinstance(value, Mapping):
            raise SpecError(f"expected a mapping, got {value!r}", key=key)
        sections[key] = build(cls, value, prefix=key)
    free = {}
    for key in ("search", "ablations", "provenance"):
        value = raw.get(key) or {}
        if not isinstance(value, Mapping):
            raise SpecError(f"expected a mapping, got {value!r}", key=key)
        free[key] = dict(value)
    spec = Spec(name=raw["name"], method=method, params=params, source=source, **sections, **free)
    from raysearch.data import dataset_kind

    if spec.selection.anomalies == "auto":
        resolved = "other_classes" if dataset_kind(spec.data.dataset) == "classes" else "synthetic"
        object.__setattr__(spec.selection, "anomalies", resolved)
    from raysearch.config.selection import AUTO, DEFAULT_OBJECTIVE, resolve_selection

    search = spec.search
    if isinstance(search, dict) and search:
        # The default objective, resolved here, once, so spec.yaml, the searcher, the
        # ranking and export all read the same metric.
        metric = search.get("metric")
        if metric in (AUTO, None):
            search["metric"] = DEFAULT_OBJECTIVE
        elif isinstance(metric, list):
            search["metric"] = [DEFAULT_OBJECTIVE if m == AUTO else m for m in metric]
    resolved = resolve_selection(spec)
    selection = spec.selection
    for key, value in resolved.items():
        object.__setattr__(selection, key, value)
    return spec


NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def parse_set(items: Sequence[str]) -> dict[str, Any]:
    """Parse ``--set KEY=VALUE`` items; each VALUE is read as YAML (``[0, 1]``, ``1e-3``, ``true``)."""
    updates: dict[str, Any] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise SpecError(f"expected --set KEY=VALUE, got {item!r}", source="--set")
        try:
            updates[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError as err:
            raise SpecError(f"value is not valid YAML: {err}", source="--set", key=key) from None
    return updates


def load_spec(path: str | os.PathLike, overrides: Sequence[str] | Mapping[str, Any] = ()) -> Spec:
    """Load, override and validate a spec file.

    Raises:
        SpecError: naming the file, the key and what is allowed.
    """
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SpecError("no such spec file", source=source) from None
    except OSError as err:
        raise SpecError(f"cannot read: {err.strerror}", source=source) from None
    return spec_from_text(text, source, overrides)


def spec_from_text(text: str, source: str, overrides: Sequence[str] | Mapping[str, Any] = ()) -> Spec:
    """:func:`load_spec` of a spec's text (a file read elsewhere, e.g. an experiment's
    ``spec.yaml`` in a bucket); ``source`` names it in messages."""
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise SpecError(f"not valid YAML: {err}", source=source) from None
    if not isinstance(raw, dict):
        raise SpecError("expected a mapping at the top level", source=source)
    updates = parse_set(overrides) if not isinstance(overrides, Mapping) else dict(overrides)
    for key, value in updates.items():
        try:
            _set_dotted(raw, key, value)
        except SpecError as err:
            raise err.located(source) from None
    return spec_from_dict(raw, source=source)


def config_hash(flat: Mapping[str, Any]) -> str:
    """A short stable hash of a flat config (key order does not matter)."""
    blob = json.dumps(dict(sorted(flat.items())), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
