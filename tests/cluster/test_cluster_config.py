"""The cluster file: the documented example reads as documented, and every mistake is one
line naming the file and the key."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

import ganglion.runtime.serving.cluster_config as cluster_config
from ganglion.runtime.cli.cluster import EXAMPLE
from ganglion.runtime.serving.cluster_config import (
    ClusterConfigError,
    parse_cluster_config,
    read_cluster_config,
)

MINIMAL = """
[[ensemble]]
name = "moe"
bundle = "bundles/moe"

[[node]]
name = "a"
port = 9001
models = ["e1"]
"""


def _documented_example() -> str:
    """The TOML in the module docstring, as a user would copy it."""
    doc = cluster_config.__doc__ or ""
    block = doc.split("::", 1)[1].split('"""')[0]
    lines = [line[4:] for line in block.splitlines() if line.startswith("    ")]
    return "\n".join(lines)


def test_the_documented_example_reads_with_every_key_applied(tmp_path: Path) -> None:
    config = parse_cluster_config(_documented_example(), tmp_path / "c.toml")
    c = config.coordinator
    assert (c.host, c.port, c.device, c.max_concurrency) == ("127.0.0.1", 8000, "auto", 256)
    assert (c.call_timeout_ms, c.request_timeout_ms) == (5000.0, 30000.0)
    assert c.token_file == tmp_path / "token" and c.link.mbps == 100.0
    (ensemble,) = config.ensembles
    assert ensemble.bundle == tmp_path / "digits-moe"
    assert (ensemble.energy_budget_j, ensemble.latency_budget_ms) == (5.0, 100.0)
    orin, triton = config.nodes
    assert (orin.name, orin.address, orin.device) == ("orin-a", "127.0.0.1:8101", orin.device)
    assert orin.models == ("low", "high") and orin.start == "serve"
    assert orin.token_file == tmp_path / "node-token"
    assert (triton.address, triton.start, triton.tls_ca) == (
        "10.0.0.7:8001",
        "external",
        tmp_path / "ca.pem",
    )
    assert config.hosts_of("high") == [orin, triton]


def test_the_example_in_the_cli_help_reads(tmp_path: Path) -> None:
    block = EXAMPLE.split("\b\n", 1)[1].split("\n\n", 1)[0]
    config = parse_cluster_config(block, tmp_path / "c.toml")
    assert [e.name for e in config.ensembles] == ["digits-moe"]
    assert [(n.name, n.start) for n in config.nodes] == [
        ("orin-a", "serve"),
        ("triton", "external"),
    ]
    assert config.ensembles[0].energy_budget_j == 0.01
    with_bom = parse_cluster_config("\ufeff" + block, tmp_path / "c.toml")  # as Notepad saves
    assert with_bom == config


def test_omitted_keys_take_their_defaults(tmp_path: Path) -> None:
    config = parse_cluster_config(MINIMAL, tmp_path / "c.toml")
    assert config.coordinator.port == 8000 and config.coordinator.link.latency_ms == 2.0
    assert math.isinf(config.ensembles[0].energy_budget_j)
    node = config.nodes[0]
    assert (node.host, node.device, node.start, node.backend) == (
        "127.0.0.1",
        "cpu",
        "serve",
        "auto",
    )


NODE_B = 'name = "b"\nmodels = ["e1"]\n'


@pytest.mark.parametrize(
    ("before", "message"),
    [
        ("nodes = 1\n", "nodes is not a known key"),
        ("[coordinator]\nprot = 1\n", "coordinator.prot is not a known key"),
        ("[coordinator]\nport = 70000\n", "coordinator.port must be an integer in [0, 65535]"),
        ("[coordinator]\ncall_timeout_ms = 0\n", "call_timeout_ms must be a positive number"),
        ("[coordinator.link]\nmbps = -1\n", "coordinator.link.mbps must be a positive number"),
        ("[[node]]\n" + NODE_B, "node[0].port is required"),
        ("[[node]]\nport = 9002\n" + NODE_B.replace('"b"', '"a"'), "two [[node]] tables"),
        ("[[node]]\nport = 9001\n" + NODE_B, "nodes 'b' and 'a' share the address"),
        ('[[node]]\nname = "b"\nport = 9002\nmodels = []\n', "node[0].models must name"),
        ("[[node]]\nport = 9002\nstart = 'ssh'\n" + NODE_B, "node[0].start must be one of"),
        ("[[node]]\nport = 9002\ntls_ca = 'ca.pem'\n" + NODE_B, "tls_ca is for external"),
        ('[[ensemble]]\nname = "x"\n', "ensemble[0].bundle is required"),
        ("[[ensemble]]\nname = 'y'\nbundle = 'b'\nenergy_budget_j = -2\n", "must be a number >= 0"),
        ("[[ensemble]]\nname = 'y'\nbundle = 'b'\nenergy_budget_j = inf\n", "leave it out"),
        ("[[ensemble]]\nname = 'y'\nbundle = 'b'\nlatency_budget_ms = nan\n", "got nan"),
        ("[coordinator]\nport = 9001\n", "the coordinator and node 'a' share the address"),
        (  # one loopback: localhost and 127.0.0.1 on one port collide
            "[coordinator]\nport = 9001\nhost = 'localhost'\n",
            "the coordinator and node 'a' share the address",
        ),
        ("[[node]]\nport = 9001\nhost = '::1'\n" + NODE_B, "nodes 'b' and 'a' share"),
    ],
)
def test_a_mistake_is_one_line_naming_the_file_and_the_key(
    tmp_path: Path, before: str, message: str
) -> None:
    with pytest.raises(ClusterConfigError) as refused:
        parse_cluster_config(before + MINIMAL, tmp_path / "c.toml")
    assert str(refused.value).startswith(f"{tmp_path / 'c.toml'}: ")
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_a_cluster_file_whose_ensemble_bundle_is_missing_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(MINIMAL)
    with pytest.raises(ClusterConfigError) as refused:
        read_cluster_config(path)
    assert str(refused.value) == (
        f"{path}: ensemble[0].bundle: no bundle at {tmp_path / 'bundles/moe'} "
        "(a folder with a manifest.json)"
    )


def test_a_file_that_is_not_toml_or_not_there_is_named(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[[node]\n")
    with pytest.raises(ClusterConfigError, match=r"broken.toml: not valid TOML"):
        read_cluster_config(broken)
    with pytest.raises(ClusterConfigError, match=r"missing.toml: no such file"):
        read_cluster_config(tmp_path / "missing.toml")


def test_experts_no_node_hosts_are_found_for_the_warning(
    tmp_path: Path, ensemble_bundle: Path, cluster_file
) -> None:
    """A cluster whose nodes host e1 only came up without a word, and answered every request
    with e1 alone; ``cluster up`` now warns, naming the others."""
    from ganglion.runtime.serving.cluster_config import unhosted_experts

    config = read_cluster_config(cluster_file(tmp_path, ensemble_bundle, {"n": {"models": ["e1"]}}))
    assert unhosted_experts(config) == {"moe": ["e2", "e3"]}
    every = {"n": {"models": ["e1", "e2"]}, "m": {"models": ["e3"]}}
    assert (
        unhosted_experts(read_cluster_config(cluster_file(tmp_path, ensemble_bundle, every))) == {}
    )
