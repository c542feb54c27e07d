"""The shipped demo specs and specs built in code (no torch, no Ray)."""

from __future__ import annotations

import os

from raysearch.config.spec import spec_from_dict

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def demo_spec(method: str) -> str:
    return os.path.join(REPO, "search_spaces", "demo", f"{method}.yaml")


BASE = {"name": "s", "method": "distcon", "train": {"epochs": 2}}


def spec_with(search):
    return spec_from_dict({**BASE, "search": search}, source="s.yaml")
