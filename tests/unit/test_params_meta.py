"""Parameter metadata: one declaration gives the range check, the error message and the
`raysearch methods NAME` table."""

import dataclasses
import math
import re

import pytest

from raysearch.cli import main
from raysearch.config import registry
from raysearch.config.schema import Range, SpecError, build, describe_fields, param
from raysearch.config.space import parse_search
from raysearch.config.spec import spec_from_dict

METHODS = registry.method_names()


def table(method, capsys):
    """``raysearch methods METHOD`` as {dotted key: [type, allowed, default, meaning]}."""
    assert main(["methods", method]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = [re.split(r" {2,}", line) for line in out if line.startswith("params.")]
    return {row[0]: row[1:] for row in rows}


def spec(method, params):
    return spec_from_dict({"name": "t", "method": method, "params": params}, source="t.yaml")


def test_methods_name_prints_type_allowed_default_and_meaning(capsys):
    rows = table("distcon", capsys)
    assert rows["params.gmm.components"] == [
        "int", "1..64", "4", "K Gaussians per rotation; K=1 with covariance=fixed is GOAD",
    ]
    assert rows["params.gmm.covariance"][:3] == ["str", "diag | spherical | fixed", "diag"]  # Literal choices
    assert rows["params.gmm.temperature"][:3] == ["float", "> 0", "1.0"]
    assert rows["params.gmm.min_log_var"][:3] == ["float", "-", "-6.0"]  # free
    assert rows["params.rotations"][:3] == ["str", "-", "0-90-180-270"]
    clflow = table("clflow", capsys)
    assert clflow["params.synthesis.prob"][:2] == ["float", "(0, 1]"]
    assert clflow["params.classification.label_smoothing"][:2] == ["float", "[0, 1)"]
    assert clflow["params.synthesis.texture_dir"][:3] == ["str | None", "-", "None"]
    assert table("cutswap", capsys)["params.cluster.grid"][:3] == ["int", "0 or >= 4", "32"]


@pytest.mark.parametrize("method", METHODS)
def test_table_lists_every_parameter_once_in_spec_order(method, capsys):
    rows = table(method, capsys)
    defaults = spec(method, {}).to_dict()["params"]
    assert list(rows) == [f"params.{key}" for key in defaults]


def test_unknown_method_is_one_line_exit_2(capsys):
    assert main(["methods", "patchcore"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        "raysearch: error: unknown method 'patchcore'; known methods: clflow, cutswap, distcon"
    ]


def test_methods_without_name_lists_every_method_with_defaults(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for method in METHODS:
        assert f"{method}: {registry.describe(method)}\n" in out
    assert "    params.gmm.components = 4\n" in out
    assert "    params.flow.steps = 8\n" in out


@pytest.mark.parametrize("method", METHODS)
def test_every_parameter_documents_itself(method):
    docs = describe_fields(registry.params_class(method))
    assert docs
    for doc in docs:
        assert doc.help.strip() and "\n" not in doc.help, f"params.{doc.key} has no one-line help"


@pytest.mark.parametrize(
    "method, key, bad, message, accepted",
    [
        ("distcon", "gmm.components", 100, "expected an integer in 1..64, got 100", [1, 64]),
        ("distcon", "gmm.components", 0, "expected an integer in 1..64, got 0", [1, 64]),
        ("distcon", "gmm.temperature", 0, "expected a number > 0, got 0.0", [1e-9]),
        ("distcon", "score.batch_size", 0, "expected an integer >= 1, got 0", [1]),
        ("clflow", "synthesis.prob", 0, "expected a number in (0, 1], got 0.0", [1, 1e-9]),
        ("clflow", "classification.label_smoothing", 1, "expected a number in [0, 1), got 1.0", [0, 0.99]),
        ("clflow", "flow.hidden_ratio", ".nan", "expected a number > 0, got nan", [0.16]),
        ("cutswap", "cluster.grid", 3, "expected 0 or an integer >= 4, got 3", [0, 4]),
        ("cutswap", "augment.hue", 0.51, "expected a number in [0, 0.5], got 0.51", [0, 0.5]),
        ("cutswap", "head.layers", 9, "expected an integer in 0..8, got 9", [0, 8]),
    ],
)
def test_declared_ranges_are_enforced_and_their_ends_accepted(method, key, bad, message, accepted):
    if bad == ".nan":
        bad = float("nan")
    with pytest.raises(SpecError) as info:
        spec(method, {key: bad})
    assert str(info.value) == f"t.yaml: params.{key}: {message}"
    for value in accepted:
        assert spec(method, {key: value}).flat_config()[f"params.{key}"] == value


def _ranged_fields():
    for method in METHODS:
        for doc in describe_fields(registry.params_class(method)):
            if doc.range is not None:
                yield pytest.param(method, doc, doc.range, id=f"{method}:{doc.key}")


@pytest.mark.parametrize("method, doc, bounds", list(_ranged_fields()))
def test_every_declared_range_refuses_just_outside_and_names_the_key(method, doc, bounds):
    """Generic: a value just past each end is refused with the declared range in the message."""
    integer = doc.type == "int"
    step = 1 if integer else 1e-6
    outside = []
    if bounds.ge is not None:
        outside.append(bounds.ge - step)
    if bounds.gt is not None:
        outside.append(bounds.gt)
    if bounds.le is not None:
        outside.append(bounds.le + step)
    if bounds.lt is not None:
        outside.append(bounds.lt)
    if not integer:
        outside.append(math.nan)
    outside = [v for v in outside if v not in bounds.also]
    assert outside
    for value in outside:
        with pytest.raises(SpecError) as info:
            spec(method, {doc.key: value})
        assert info.value.key == f"params.{doc.key}"
        assert info.value.problem.startswith(f"expected {bounds.expected(integer)}, got ")


def test_cross_field_rules_stay_in_validate():
    with pytest.raises(SpecError, match=r"params.patch.area_min: expected area_min <= area_max, got 0.1, 0.05"):
        spec("cutswap", {"patch.area_min": 0.1, "patch.area_max": 0.05})
    with pytest.raises(SpecError, match="params.synthesis.perlin_min_scale: expected perlin_min_scale < perlin_max_scale"):
        spec("clflow", {"synthesis.perlin_min_scale": 6, "synthesis.perlin_max_scale": 6})
    assert spec("clflow", {"synthesis.perlin_min_scale": 9, "synthesis.perlin_max_scale": 10})


def test_a_search_space_past_a_declared_range_is_refused():
    raw = {"name": "t", "method": "distcon", "search": {"space": {"params.gmm.components": {"int": [1, 100]}}}}
    with pytest.raises(SpecError) as info:
        parse_search(spec_from_dict(raw, source="t.yaml"))
    assert str(info.value) == (
        "t.yaml: search.space.params.gmm.components: value 100 is refused: expected an integer in 1..64, got 100"
    )
    raw["search"]["space"]["params.gmm.components"]["int"] = [1, 64]
    assert parse_search(spec_from_dict(raw, source="t.yaml")).space[0].high == 64


def test_param_checks_its_own_declaration():
    with pytest.raises(ValueError, match="default 0 is outside its range >= 1"):
        param(0, help="a count", ge=1)
    with pytest.raises(ValueError, match="help must be one non-empty line"):
        param(1, help=" ")
    with pytest.raises(TypeError, match="at most one lower bound"):
        param(1, help="a count", ge=1, gt=0)


def test_range_text_and_messages():
    assert Range(ge=1, le=64).text(integer=True) == "1..64"
    assert Range(ge=1, le=64).text(integer=False) == "[1, 64]"
    assert Range(gt=0).expected(integer=False) == "a number > 0"
    assert Range(ge=0, lt=1).expected(integer=False) == "a number in [0, 1)"
    assert Range(ge=4, also=(0,)).expected(integer=True) == "0 or an integer >= 4"
    assert Range(gt=0, le=1).contains(1) and not Range(gt=0, le=1).contains(0)
    assert not Range(ge=0).contains(math.nan)


def test_build_checks_ranges_of_any_dataclass():
    @dataclasses.dataclass(frozen=True)
    class Inner:
        rate: float = param(0.5, help="a rate", ge=0, le=1)

    @dataclasses.dataclass(frozen=True)
    class Outer:
        inner: Inner = dataclasses.field(default_factory=Inner)

    assert build(Outer, {"inner.rate": 1}).inner.rate == 1.0
    with pytest.raises(SpecError) as info:
        build(Outer, {"inner.rate": 2}, prefix="params")
    assert str(info.value) == "params.inner.rate: expected a number in [0, 1], got 2.0"
