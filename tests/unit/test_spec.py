"""Spec loading and validation: defaults, overrides, and one clear message per mistake."""

import subprocess
import sys

import pytest
from helpers.specs import REPO

from raysearch.config import registry
from raysearch.config.schema import SpecError
from raysearch.config.spec import load_spec, parse_set, spec_from_dict


def write(tmp_path, text, name="spec.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


MINIMAL = "name: t\nmethod: distcon\n"


def test_defaults_fill_everything(tmp_path):
    spec = load_spec(write(tmp_path, MINIMAL))
    assert spec.params == registry.params_class("distcon")()
    assert spec.train.epochs == 10 and spec.data.dataset == "digits"
    assert spec.to_dict()["params"]["gmm.components"] == 4


def test_dotted_params_and_set_overrides(tmp_path):
    path = write(tmp_path, MINIMAL + "params:\n  gmm.components: 3\n  gmm:\n    temperature: 0.2\n")
    spec = load_spec(path, ["params.gmm.components=7", "train.lr=1e-2", "data.classes=[0, 1]"])
    assert spec.params.gmm.components == 7
    assert spec.params.gmm.temperature == 0.2
    assert spec.train.lr == 0.01
    assert spec.data.classes == ("0", "1")


def test_with_overrides_round_trips(tmp_path):
    spec = load_spec(write(tmp_path, MINIMAL))
    other = spec.with_overrides({"params.rotations": "0-180", "train.seed": 3})
    assert other.params.rotations == "0-180" and other.train.seed == 3
    assert spec_from_dict(other.to_dict(), source=other.source) == other


@pytest.mark.parametrize(
    "text, sets, fragment",
    [
        (MINIMAL, ["params.no_such_key=1"], "params.no_such_key: unknown key; allowed keys here:"),
        (MINIMAL, ["params.gmm.componentz=1"], "params.gmm.componentz: unknown key"),
        (MINIMAL, ["params.gmm.components=many"], "params.gmm.components: expected an integer, got 'many'"),
        (MINIMAL, ["params.gmm.components=100"], "params.gmm.components: expected an integer in 1..64, got 100"),
        (MINIMAL, ["params.gmm.covariance=full"], "params.gmm.covariance: expected one of 'diag', 'spherical', 'fixed'"),
        (MINIMAL, ["params.rotations=0-45"], "params.rotations: expected distinct angles"),
        (MINIMAL, ["train.epochs=0"], "train.epochs: expected a positive integer"),
        (MINIMAL, ["train.optimiser=sgd"], "train.optimiser: unknown key"),
        (MINIMAL, ["data.dataset=imagenet1k"], "data.dataset: unknown dataset 'imagenet1k'; known:"),
        (MINIMAL, ["selection.split=train"], "selection.split: expected one of 'validation', 'test'"),
        ("name: t\nmethod: patchcore\n", [], "method: unknown method 'patchcore'; known methods: "),
        ("name: t\nmethod: distcon\nepochs: 3\n", [], "epochs: unknown key; allowed top-level keys"),
        ("name: t\n", [], "method: required"),
        # The name is a folder under --storage: nothing that leaves it.
        ("name: ../escape\nmethod: distcon\n", [], "name: expected a plain name (letters, digits, '-', '_', '.'; no path separator), got '../escape'"),
        ("name: a/b\nmethod: distcon\n", [], "name: expected a plain name"),
        ("name: '..'\nmethod: distcon\n", [], "name: expected a plain name"),
        ("name: .hidden\nmethod: distcon\n", [], "name: expected a plain name"),
        ("name: t\nmethod: distcon\ndata: [1]\n", [], "data: expected a mapping"),
        ("name: t\nmethod: distcon\nparams: {score.components: gmm+rotation, loss.rotation_weight: 0}\n", [],
         "params.score.components: score component 'rotation' needs"),
    ],
)
def test_errors_name_file_key_and_allowed(tmp_path, text, sets, fragment):
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as info:
        load_spec(path, sets)
    message = str(info.value)
    assert message.startswith(str(path)), message
    assert fragment in message, message
    assert "\n" not in message


def test_bad_yaml_and_missing_file(tmp_path):
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(write(tmp_path, "name: [unclosed\n"))
    with pytest.raises(SpecError, match="no such spec file"):
        load_spec(tmp_path / "nope.yaml")
    with pytest.raises(SpecError, match="expected --set KEY=VALUE"):
        parse_set(["novalue"])


def test_shipped_specs_validate():
    import glob
    import os

    root = os.path.join(REPO, "search_spaces")
    paths = sorted(glob.glob(os.path.join(root, "**", "*.yaml"), recursive=True))
    assert paths
    for path in paths:
        load_spec(path)


def test_cli_bad_key_one_line_exit_2(demo_spec_path):
    proc = subprocess.run(
        [sys.executable, "-m", "raysearch.cli", "train", demo_spec_path, "--set", "params.no_such_key=1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "params.no_such_key" in lines[0] and "demo/distcon.yaml" in lines[0]


def test_import_raysearch_is_light():
    code = "import sys, raysearch, raysearch.config.spec, raysearch.cli, analysis; print('torch' in sys.modules, 'ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
