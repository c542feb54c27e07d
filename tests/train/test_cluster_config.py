"""cluster.yaml: valid for Ray's cluster launcher, checked offline, and free of secrets.

`ray up` has no dry run, so the schema check reproduces the part of `ray up` that needs
no cloud. `ray up` (ray.autoscaler._private.commands._bootstrap_config) runs, in order:

    prepare_config(config)          merge with ray/autoscaler/aws/defaults.yaml (read from
                                    the installed ray; no boto3), fill per-type min/max workers
    import the AWS provider         needs boto3
    fillout_..._resources(config)   asks EC2 for CPU/GPU/memory per instance type
    validate_config(config)         jsonschema against ray/autoscaler/ray-schema.json,
                                    plus head type / min-max workers checks
    provider.bootstrap_config(...)  IAM role, key pair, subnets, security group: AWS calls

This test runs the first and the fourth: prepare_config then validate_config. The two
skipped steps need boto3 and AWS credentials. The resource autofill only adds keys
(CPU, GPU, memory) the file leaves out, as non-negative integers, which is all the
schema asks of `resources`; the GPU types write theirs out anyway. So skipping it
changes nothing the schema looks at. validate_config is not run on the
raw file alone: it requires fields that only the defaults merge adds
(cluster_synced_files and others) and would reject a correct file. Network access is
blocked while the checks run, to keep them honest about being offline.
"""

from __future__ import annotations

import copy
import os
import re
import shlex
import socket
import sys

import jsonschema
import pytest
import ray
import yaml
from helpers.specs import REPO
from packaging.specifiers import SpecifierSet
from packaging.version import Version
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER_YAML = os.path.join(REPO, "cluster.yaml")
PYPROJECT = os.path.join(REPO, "pyproject.toml")


@pytest.fixture
def text() -> str:
    with open(CLUSTER_YAML) as f:
        return f.read()


@pytest.fixture
def cfg(text) -> dict:
    return yaml.safe_load(text)


@pytest.fixture
def offline(monkeypatch):
    """Any attempt to open a network connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"cluster config check tried to reach the network: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def check(config: dict) -> dict:
    """What `ray up` checks before it talks to AWS; returns the prepared config."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def node_types(cfg: dict) -> dict:
    return cfg["available_node_types"]


def gpu_types(cfg: dict) -> dict:
    return {
        name: t for name, t in node_types(cfg).items() if t.get("resources", {}).get("GPU", 0) > 0
    }


# ---- Ray's own schema, offline -------------------------------------------------------


def test_valid_for_rays_cluster_launcher(cfg, offline):
    had_boto3 = "boto3" in sys.modules
    prepared = check(cfg)
    # The merge with AWS defaults kept our choices (a shallow update: ours win).
    assert prepared["provider"]["type"] == "aws"
    assert prepared["head_node_type"] == "head_cpu"
    assert set(prepared["available_node_types"]) == {"head_cpu", "gpu_1x_a10g", "gpu_4x_a10g"}
    # The check needed no AWS SDK: it did not import boto3.
    assert had_boto3 or "boto3" not in sys.modules


@pytest.mark.parametrize(
    "breakage",
    [
        pytest.param(lambda c: c.update(max_workers="many"), id="max_workers-not-an-int"),
        pytest.param(lambda c: c.update(worker_count=4), id="unknown-top-level-key"),
        pytest.param(
            lambda c: c["available_node_types"]["gpu_1x_a10g"].update(min_worker=1),
            id="typo-in-a-node-type",
        ),
        pytest.param(
            lambda c: c["available_node_types"]["gpu_1x_a10g"].pop("node_config"),
            id="node-type-without-node_config",
        ),
        pytest.param(lambda c: c["docker"].update(imag="rayproject/ray"), id="typo-in-docker"),
        pytest.param(lambda c: c.update(idle_timeout_minutes=-1), id="negative-idle-timeout"),
    ],
)
def test_validator_rejects_broken_copies(cfg, offline, breakage):
    broken = copy.deepcopy(cfg)
    breakage(broken)
    with pytest.raises(jsonschema.ValidationError):
        check(broken)


def test_validator_rejects_unknown_head_type(cfg, offline):
    broken = copy.deepcopy(cfg)
    broken["head_node_type"] = "head_gpu"
    with pytest.raises(ValueError, match="head_node_type"):
        check(broken)


# ---- versions ------------------------------------------------------------------------


def test_image_matches_installed_ray_and_has_cuda_tag(cfg):
    image = cfg["docker"]["image"]
    assert "head_image" not in cfg["docker"] and "worker_image" not in cfg["docker"]
    m = re.fullmatch(r"rayproject/ray:(?P<ray>[0-9.]+)-py3\d+-cu1\d+", image)
    assert m, (
        f"expected rayproject/ray:<version>-py3xx-cu1xx (ray-ml stopped at 2.49), got {image!r}"
    )
    assert m["ray"] == ray.__version__, (
        f"image has Ray {m['ray']}, installed Ray is {ray.__version__}"
    )


def test_image_ray_version_within_project_pin_and_pinned_in_setup(cfg):
    image_ray = re.search(r"rayproject/ray:([0-9.]+)-", cfg["docker"]["image"])[1]
    with open(PYPROJECT) as f:
        pin = re.search(r'"ray\[[^\]]*\]([^"]+)"', f.read())[1]
    assert Version(image_ray) in SpecifierSet(pin), (
        f"image Ray {image_ray} outside pyproject's ray{pin}"
    )
    # The install on the nodes holds Ray at the image's version (pip could move it otherwise).
    setup = " ".join(cfg["setup_commands"])
    assert f"=={image_ray}" in setup and "pip install" in setup and "-e ~/raysearch" in setup


# ---- node types ----------------------------------------------------------------------


def test_head_is_on_demand_cpu_only(cfg):
    head = node_types(cfg)[cfg["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    assert "InstanceMarketOptions" not in head["node_config"], (
        "a spot head takes the sweep down with it"
    )
    assert head["node_config"]["InstanceType"].startswith(("m", "c", "r"))


def test_gpu_workers_are_spot_and_scale_from_zero(cfg):
    gpus = gpu_types(cfg)
    assert {t["node_config"]["InstanceType"] for t in gpus.values()} == {"g5.xlarge", "g5.12xlarge"}
    for name, t in gpus.items():
        market = t["node_config"].get("InstanceMarketOptions", {})
        assert market.get("MarketType") == "spot", f"{name} is not spot"
        assert t["min_workers"] == 0, f"{name} keeps GPUs running while idle"
        assert 0 < t["max_workers"] <= cfg["max_workers"]
    assert sum(t["max_workers"] for t in gpus.values()) <= cfg["max_workers"]


def test_every_node_type_sets_its_ami(cfg):
    # Without ImageId Ray falls back to an old Ubuntu 18.04 Deep Learning AMI.
    images = {t["node_config"].get("ImageId") for t in node_types(cfg).values()}
    assert len(images) == 1 and None not in images


def test_idle_timeout_is_set(cfg):
    # Set in the file itself (the AWS defaults would fill in 5 minutes silently).
    assert (
        isinstance(cfg.get("idle_timeout_minutes"), (int, float))
        and cfg["idle_timeout_minutes"] > 0
    )


def test_repo_is_mounted_and_installed(cfg):
    assert cfg["file_mounts"]["~/raysearch"] == "."
    assert any("pip install" in c and "-e ~/raysearch" in c for c in cfg["setup_commands"])


# ---- network exposure and authentication ---------------------------------------------


def _ray_start(commands: list[str]) -> list[str]:
    (cmd,) = [c for c in commands if "ray start" in c]
    return shlex.split(cmd.replace(";", " ; "))


def test_dashboard_listens_on_localhost_only(cfg):
    args = _ray_start(cfg["head_start_ray_commands"])
    hosts = [a.split("=", 1)[1] for a in args if a.startswith("--dashboard-host=")]
    hosts += [args[i + 1] for i, a in enumerate(args) if a == "--dashboard-host"]
    assert hosts == ["127.0.0.1"]
    assert "--head" in args
    for commands in (cfg["head_start_ray_commands"], cfg["worker_start_ray_commands"]):
        assert "0.0.0.0" not in " ".join(commands)


def test_token_authentication_on_every_node(cfg):
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert "RAY_AUTH_MODE=token" in " ".join(cfg[key]), key
    # Workers join with the same token as the head: the file mount reaches every node.
    assert cfg["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"


# ---- no secrets or account-specific ids ----------------------------------------------

SECRET_PATTERNS = {
    "AWS account id (12 digits)": r"(?<![0-9])[0-9]{12}(?![0-9])",
    "AWS access key id": r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA)[A-Z0-9]{16}\b",
    "AWS secret access key": r"(?i)aws_secret_access_key|secret_access_key\s*[:=]",
    "subnet id": r"\bsubnet-[0-9a-f]{8,17}\b",
    "security group id": r"\bsg-[0-9a-f]{8,17}\b",
    "VPC id": r"\bvpc-[0-9a-f]{8,17}\b",
    "IAM ARN with an account": r"arn:aws:iam::[0-9]",
    "private key": r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
}


@pytest.mark.parametrize("what", SECRET_PATTERNS)
def test_no_secrets_or_account_ids_anywhere(text, what):
    # Comments included: a pasted id in a comment is as public as one in a value. AMI ids
    # are public and users paste theirs into ImageId (docs/cluster.md), so they may appear.
    hits = re.findall(SECRET_PATTERNS[what], text)
    assert not hits, f"cluster.yaml holds what looks like a {what}: {hits}"


def test_no_account_specific_settings(cfg):
    assert "ssh_private_key" not in cfg.get("auth", {})
    for name, t in node_types(cfg).items():
        for key in ("KeyName", "SubnetId", "SubnetIds", "SecurityGroupIds", "NetworkInterfaces"):
            assert key not in t["node_config"], f"{name}.node_config.{key} is account-specific"
        profile = t["node_config"].get("IamInstanceProfile", {})
        assert "Arn" not in profile, (
            f"{name}: name the instance profile, an ARN holds the account id"
        )


@pytest.mark.parametrize(
    "pattern",
    [
        "123456789012",
        "AKIAABCDEFGHIJKLMNOP",
        "subnet-0abc1234def567890",
        "sg-0123abcd",
        "arn:aws:iam::123456789012:instance-profile/x",
    ],
)
def test_secret_patterns_catch_examples(pattern):
    assert any(re.search(p, pattern) for p in SECRET_PATTERNS.values()), pattern
