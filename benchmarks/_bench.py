"""Helpers shared by the benchmark scripts: the machine line, timing and result files.

The machine line ends with ``source``, a hash of the raysearch and analysis sources, so
that figures taken on different versions of the code can be told apart.

Every script prints the figures it claims together with :func:`machine` and writes
the same figures as JSON to ``benchmarks/results/<name>.json``, from which
``benchmarks/run_all.py`` regenerates BENCHMARKS.md.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")
DEMO = os.path.join(REPO, "search_spaces", "demo")
# A harder toy-mvtec (faint, small scratches, blobs and holes): a real spread of results.
HARD_TOY = {"defect_opacity": 0.5, "defect_scale": 0.6, "size": 64, "n_train": 110,
            "n_test_good": 24, "n_test_defect": 12, "categories": ("stripes", "dots")}

if REPO not in sys.path:  # run from anywhere without installing
    sys.path.insert(0, REPO)


def generated(root: str, options: dict[str, Any], write: Any) -> str:
    """``root``, written by ``write(root)`` once and reused while ``options`` are unchanged
    (they are kept in ``root/options.json``)."""
    marker = os.path.join(root, "options.json")
    wanted = json.dumps(options, sort_keys=True, default=list)
    if not (os.path.exists(marker) and open(marker).read() == wanted):
        write(root)
        with open(marker, "w") as f:
            f.write(wanted)
    return root


def hard_toy_root() -> str:
    """The :data:`HARD_TOY` dataset in the MVTec layout, generated once into the temp folder."""
    from raysearch.data.toy import make_toy_mvtec

    return generated(os.path.join(tempfile.gettempdir(), "raysearch-bench-toy-hard"), HARD_TOY,
                     lambda root: make_toy_mvtec(root, seed=7, **HARD_TOY))


def source_hash() -> str:
    """A short hash of the raysearch and analysis sources, to tell which code a figure was measured on."""
    digest = hashlib.sha256()
    for package in ("raysearch", "analysis"):
        for root, dirs, files in sorted(os.walk(os.path.join(REPO, package))):
            dirs.sort()
            for name in sorted(files):
                if name.endswith(".py"):
                    path = os.path.join(root, name)
                    digest.update(os.path.relpath(path, REPO).encode())
                    with open(path, "rb") as f:
                        digest.update(f.read())
    return digest.hexdigest()[:12]


def machine() -> dict[str, Any]:
    """Platform, CPU count, library versions, load and date of this run."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "source": source_hash(),
    }
    try:
        info["load_avg_1m"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    # Versions from package metadata: a benchmark that needs neither Ray nor Optuna (the
    # GPU throughput run) must not import them.
    for name in ("torch", "ray", "optuna", "pandas"):
        try:
            info[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            info[name] = None
    try:
        import torch

        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return info


def machine_line(info: dict[str, Any]) -> str:
    keys = ("platform", "cpus", "python", "torch", "ray", "optuna", "pandas", "gpu", "load_avg_1m", "date", "source")
    return "machine: " + ", ".join(f"{k}={info[k]}" for k in keys if k in info)


def median(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float]) -> str:
    """``median (min-max, n=...)`` of a list of measurements."""
    return f"{median(values):.3g} (min {min(values):.3g}, max {max(values):.3g}, n={len(values)})"


class Timer:
    """``with Timer() as t: ...`` then ``t.s`` holds the elapsed seconds."""

    def __enter__(self) -> "Timer":
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.s = time.perf_counter() - self.start


def save(name: str, payload: dict[str, Any]) -> str:
    """Write ``benchmarks/results/<name>.json`` (machine info added) and return its path."""
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"{name}.json")
    payload = {"benchmark": name, "machine": machine(), **payload}
    with open(path, "w") as f:
        json.dump(payload, f, indent=2, default=str)
    return path
