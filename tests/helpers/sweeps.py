"""Result rows, experiments and Optuna studies built by hand for the analysis tests, and
the checks of what a report or a TensorBoard log holds (numpy, pyarrow, optuna: no
torch, no Ray)."""

from __future__ import annotations

import glob
import json
import os
import re
import struct
from html.parser import HTMLParser

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from analysis import config_key
from raysearch.store import results

CLASSES = ["a", "b", "c", "d"]
CLASS_OFFSET = {"a": -0.03, "b": -0.01, "c": 0.01, "d": 0.03}  # sums to 0: class means = config mean


def row(config: dict, seed: int, cls: str, val: float, test: float | None = None, *,
        kind: str = "tune", status: str = "completed", trial: str | None = None,
        optuna_trial: int | None = None, variant: str | None = None) -> dict:
    """One result row with the columns the analysis reads (the rest are optional)."""
    resolved = {**config, "train.seed": seed, "data.classes": CLASSES}
    done = status == "completed"
    return {
        "experiment": "t", "kind": kind, "status": status, "variant": variant,
        "trial_id": trial or f"{config_key(json.dumps(config))}-s{seed}", "optuna_trial": optuna_trial,
        "method": "distcon", "dataset": "digits", "normal_class": cls, "class_index": ord(cls) - ord("a"),
        "seed": seed, "config_json": json.dumps(resolved),
        "error": None if status != "failed" else "Traceback ...\nRuntimeError: loss is NaN",
        "val_image_auroc": val if done else None,
        "test_image_auroc": (val if test is None else test) if done else None,
    }


def write_rows(folder, rows: list[dict]) -> None:
    """Write ``rows`` as the results store does: one Parquet file per (trial, class)."""
    table = pa.Table.from_pylist(rows)  # one schema for every file
    out = folder / "results"
    out.mkdir(parents=True, exist_ok=True)
    keys = sorted({(r["trial_id"], r["normal_class"]) for r in rows})
    for i, (trial, cls) in enumerate(keys):
        mask = [r["trial_id"] == trial and r["normal_class"] == cls for r in rows]
        pq.write_table(table.filter(pa.array(mask)), out / f"{i:04d}.parquet")


def planted_sweep(rng: np.random.Generator, noise: float = 0.01) -> list[dict]:
    """5 configs x 3 seeds x 4 classes; config 0 is best on val (0.90) but worst on test."""
    means = [0.90, 0.85, 0.84, 0.80, 0.75]
    rows = []
    for i, mean in enumerate(means):
        config = {"method": "distcon", "params.x": i, "train.lr": 1e-3 * (i + 1)}
        for seed in range(3):
            for cls in CLASSES:
                val = mean + CLASS_OFFSET[cls] + rng.normal(0, noise)
                rows.append(row(config, seed, cls, val, test=0.5 if i == 0 else 0.99))
    return rows


def planted_study(n_trials: int = 30, storage: str | None = None, name: str = "t"):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=storage,
                                sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: t.suggest_float("x", 0, 1) + 0.01 * t.suggest_float("y", 0, 1), n_trials=n_trials)
    return study


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.refs += [v for k, v in attrs if k in ("src", "href", "srcset", "data", "action", "poster")
                      and v is not None]


def check_html(out) -> list[str]:
    """Asserts that report.html refers to nothing outside itself (every src/href is a data: URI
    or an in-page #anchor) and holds as many inlined PNGs as report.md shows; returns the
    PNG files report.md shows beside it."""

    page = (out / "report.html").read_text()
    parser = _Refs()
    parser.feed(page)
    assert "link" not in parser.tags and "script" not in parser.tags
    assert "url(" not in page and "@import" not in page
    for ref in parser.refs:
        assert ref.startswith("data:image/png;base64,") or ref.startswith("#"), ref[:80]
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (out / "report.md").read_text())
    for image in images:
        assert "/" not in image and (out / image).is_file(), image
    assert sum(r.startswith("data:") for r in parser.refs) == len(images)
    return images


SPEC_YAML = ("name: {name}\nmethod: distcon\ndata: {{dataset: digits}}\n"
             "selection: {{split: validation, anomalies: other_classes, synthesis: null, holdout: {holdout}, "
             "seed: 0, min_normals: 20, min_anomalies: 100}}\n"
             "search: {{metric: {metric}, mode: max}}\n")


def write_experiment(folder, rows: list[dict], name: str = "exp", metric: str = "val_image_auroc",
                     holdout: float = 0.1) -> str:
    """Rows as the results store holds them (one file per run and class) and a spec.yaml."""
    schema = results.results_schema({})
    out = str(folder / "results")
    for r in rows:
        results.write_rows(out, schema, [r], f"{r['trial_id']}--{r['class_index']:03d}-{r['normal_class']}")
    (folder / "spec.yaml").write_text(SPEC_YAML.format(name=name, metric=metric, holdout=holdout))
    return str(folder)


def read_scalars(folder: str) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the TensorBoard event files in ``folder``: tag -> [(step, value), ...].

    An event file is a sequence of TFRecords (a little-endian uint64 length, its CRC, an
    ``Event`` protobuf, its CRC); tensorboardX ships the protobuf classes.
    """
    from tensorboardX.proto.event_pb2 import Event

    out: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(glob.glob(os.path.join(folder, "events.out.tfevents.*"))):
        with open(path, "rb") as f:
            data = f.read()
        pos = 0
        while pos < len(data):
            (n,) = struct.unpack("<Q", data[pos:pos + 8])
            event = Event.FromString(data[pos + 12:pos + 12 + n])
            pos += 12 + n + 4
            for v in event.summary.value:
                out.setdefault(v.tag, []).append((event.step, v.simple_value))
    return out


def random_pixels(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random masks (both classes present) and maps with many ties, for the pixel metrics."""
    n, size = int(rng.integers(1, 4)), int(rng.integers(4, 12))
    masks = (rng.random((n, size, size)) < rng.uniform(0.05, 0.5)).astype(np.uint8)
    masks[0, 0, 0], masks[-1, -1, -1] = 1, 0  # both classes present
    levels = int(rng.integers(2, 12))  # few distinct values: many ties, across classes too
    maps = (rng.integers(0, levels, masks.shape) + masks * rng.integers(0, 3)).astype(np.float32)
    return masks, maps
