"""Validation families held out from training, per-family metrics, epoch selection, progress."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from raysearch.config.schema import SpecError
from raysearch.config.selection import FAMILY_METRICS, SYNTHETIC_FAMILIES
from raysearch.config.spec import load_spec, spec_from_dict
from raysearch.metrics import family_aurocs, image_auroc
from raysearch.store import results

DEMO = "search_spaces/demo/{}.yaml"


def test_default_families_exclude_every_configuration_of_the_spec():
    # distcon trains on no synthetic anomaly: every family validates.
    distcon = load_spec(DEMO.format("distcon"), ["selection.anomalies=synthetic"])
    assert distcon.selection.synthesis == SYNTHETIC_FAMILIES
    # cutswap: patch swaps and its CutPaste third class; the paste_not_swap factor is CutPaste too.
    cutswap = load_spec(DEMO.format("cutswap"))
    assert cutswap.selection.synthesis == ("scar", "perlin", "elastic", "blur", "noise")
    # A choice of the search space counts: a sweep over the third class holds scar out too.
    raw = yaml.safe_load(open(DEMO.format("cutswap")))
    raw["search"]["space"]["params.task.third"] = {"choice": ["cutpaste", "scar"]}
    assert "scar" not in spec_from_dict(raw).selection.synthesis
    # clflow: perlin (its values) and cutpaste (an ablation factor) are held out.
    assert load_spec(DEMO.format("clflow")).selection.synthesis == ("scar", "patchswap", "elastic", "blur", "noise")


def test_overlapping_families_are_refused_unless_allowed():
    with pytest.raises(SpecError) as info:
        load_spec(DEMO.format("clflow"), ["selection.synthesis=[blur, cutpaste]"])
    message = str(info.value)
    assert message.startswith("search_spaces/demo/clflow.yaml: selection.synthesis:")
    assert "['cutpaste']" in message and "allow_overlap" in message and "\n" not in message
    spec = load_spec(DEMO.format("clflow"), ["selection.synthesis=[blur, cutpaste]", "selection.allow_overlap=true"])
    assert spec.selection.synthesis == ("blur", "cutpaste")
    flat = spec.flat_config()  # recorded in every row as its own column
    assert flat["selection.allow_overlap"] is True and list(flat["selection.synthesis"]) == ["blur", "cutpaste"]


@pytest.mark.parametrize("bad", ["[scratches]", "[]", "[blur, blur]"])
def test_unknown_or_empty_families_are_refused(bad):
    with pytest.raises(SpecError, match="selection.synthesis: expected a non-empty list of distinct families"):
        load_spec(DEMO.format("distcon"), [f"selection.synthesis={bad}"])


@pytest.mark.parametrize(("method", "overrides"), [
    ("clflow", []),  # a method with maps, synthetic families with exact masks: still the image mean
    ("cutswap", []),
    ("distcon", []),
    ("distcon", ["data.dataset=toy-mvtec", "data.classes=[stripes]", "selection.anomalies=synthetic"]),
    ("cutswap", ["selection.anomalies=both"]),
    ("clflow", ["selection.split=test"]),
])
def test_the_default_objective_is_the_measured_one_for_every_method_and_dataset(method, overrides):
    from raysearch.config.selection import DEFAULT_OBJECTIVE

    assert DEFAULT_OBJECTIVE == "val_image_auroc"  # BENCHMARKS.md, Selection fidelity
    for metric in ("auto", None):
        extra = [f"search.metric={metric}"] if metric else []
        spec = load_spec(DEMO.format(method), overrides + extra)
        assert spec.search["metric"] == DEFAULT_OBJECTIVE and spec.selection.metric == DEFAULT_OBJECTIVE
    # An explicit metric is kept as it is, and "auto" inside a multi-objective list resolves.
    if method != "distcon" and not overrides:
        chosen = load_spec(DEMO.format(method), [*overrides, "search.metric=val_pixel_auroc"])
        assert chosen.search["metric"] == "val_pixel_auroc" == chosen.selection.metric
    multi = load_spec(DEMO.format(method), [*overrides, "search.metric=[auto, latency_ms]"])
    assert multi.search["metric"] == [DEFAULT_OBJECTIVE, "latency_ms"]


def test_methods_say_their_default_objective_and_why():
    from raysearch.config import registry
    from raysearch.config.selection import objective_note

    clflow = objective_note(registry.params_class("clflow"))
    assert clflow.startswith("default objective (search.metric: auto): val_image_auroc; this method's pixel")
    assert "0.45 for val_pixel_auroc" in clflow
    assert "makes no anomaly maps" in objective_note(registry.params_class("distcon"))


def test_auto_anomalies_are_other_classes_for_classes_and_synthetic_for_categories():
    digits = load_spec(DEMO.format("distcon"), ["selection.anomalies=auto"]).selection
    assert digits.anomalies == "other_classes" and digits.synthesis is None  # no synthetic family
    toy = load_spec(DEMO.format("cutswap"), ["selection.anomalies=auto"]).selection
    assert toy.anomalies == "synthetic" and "blur" in toy.synthesis


def test_selection_metrics_the_split_cannot_have_are_refused():
    with pytest.raises(SpecError, match="selection.metric: expected one of .* got 'val_image_auroc_cutpaste'"):
        load_spec(DEMO.format("cutswap"), ["selection.metric=val_image_auroc_cutpaste"])
    with pytest.raises(SpecError, match="needs pixel masks"):
        load_spec(DEMO.format("distcon"), ["selection.anomalies=other_classes", "selection.metric=val_aupro"])
    with pytest.raises(SpecError, match="unused when selection.anomalies is other_classes"):
        load_spec(DEMO.format("distcon"), ["selection.anomalies=other_classes", "selection.synthesis=[blur]"])


# -- per-family metrics ----------------------------------------------------------------
def test_family_aurocs_against_hand_computed_values():
    family = np.array([-1, -1, -1, 0, 0, 1, 1])
    scores = np.array([0.1, 0.2, 0.6, 0.7, 0.3, 0.9, 0.05])
    out = family_aurocs(family, scores, ["blur", "noise"], prefix="val_")
    # blur: 0.7 beats all three normals, 0.3 beats two of three -> 5/6; noise: 0.9 -> 3, 0.05 -> 0 -> 3/6.
    assert out["val_image_auroc_blur"] == pytest.approx(5 / 6)
    assert out["val_image_auroc_noise"] == pytest.approx(0.5)
    assert out["val_image_auroc"] == pytest.approx((5 / 6 + 0.5) / 2)
    # Equal family sizes: the mean equals the pooled AUROC.
    assert out["val_image_auroc"] == pytest.approx(image_auroc(family >= 0, scores))


def test_every_family_has_a_fixed_result_column():
    schema = results.results_schema({})
    for name in FAMILY_METRICS:
        assert schema.field(name).type == "double"
    for name in ("selection_metric", "val_normals", "val_anomalies", "facts"):
        assert name in schema.names


