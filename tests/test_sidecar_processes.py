"""``sidecar.processes``: several sidecar processes beside one Envoy, each on its own ports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sidecar import config
from sidecar.config import Address, SidecarSettings
from sidecar.errors import ConfigError


def load(sidecar: dict[str, Any]) -> SidecarSettings:
    return config.from_mapping({"sidecar": sidecar}, {}, Path.cwd()).sidecar


def test_one_process_unless_told() -> None:
    settings = load({"grpc": "127.0.0.1:7000"})
    assert settings.processes == 1
    assert settings.grpc_addresses() == (Address("127.0.0.1", 7000),)
    assert settings.for_process(0) == settings


def test_process_k_takes_the_kth_port_after_each_base() -> None:
    settings = load({"grpc": "0.0.0.0:7000", "metrics": "0.0.0.0:9000", "processes": 3})
    assert [a.port for a in settings.grpc_addresses()] == [7000, 7001, 7002]
    third = settings.for_process(2)
    assert (third.grpc, third.metrics) == (Address("0.0.0.0", 7002), Address("0.0.0.0", 9002))
    assert third.processes == 1  # a process serves one address; only Envoy lists them all
    assert third.cache_size == settings.cache_size


def test_metrics_port_zero_stays_zero_for_every_process() -> None:
    settings = load({"grpc": "127.0.0.1:7000", "metrics": "127.0.0.1:0", "processes": 2})
    assert settings.for_process(1).metrics == Address("127.0.0.1", 0)  # each picks a free one


@pytest.mark.parametrize(
    ("sidecar", "message"),
    [
        ({"processes": 0}, "expected 1…64, got 0"),
        ({"processes": 65}, "expected 1…64, got 65"),
        ({"processes": "two"}, "sidecar: invalid literal"),
        ({"grpc": "127.0.0.1:65535", "processes": 2}, "takes the next port"),
        ({"metrics": "127.0.0.1:65535", "processes": 2}, "takes the next port"),
        ({"grpc": "127.0.0.1:0", "processes": 2}, "cannot be 0"),
    ],
)
def test_bad_process_counts_are_refused(sidecar: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(sidecar)


def test_a_process_beyond_the_count_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"sidecar process 2: sidecar.processes is 2, so 0…1"):
        load({"processes": 2}).for_process(2)


def test_serve_refuses_a_process_beyond_the_count(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sidecar import cli

    settings = tmp_path / "silo-router.yaml"
    settings.write_text("sidecar:\n  processes: 2\n")
    assert cli.main(["serve", "--process", "2", "--config", str(settings)]) == 2
    assert "sidecar.processes is 2" in capsys.readouterr().err


def test_up_runs_one_process_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sidecar import cli

    settings = tmp_path / "silo-router.yaml"
    settings.write_text(f"data_dir: {tmp_path / 'data'}\nsidecar:\n  processes: 2\n")
    assert cli.main(["up", "--config", str(settings)]) == 2
    assert "up runs one sidecar process" in capsys.readouterr().err
