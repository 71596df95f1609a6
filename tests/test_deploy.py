"""compose.yaml and the Dockerfile stay consistent with the code they deploy."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from batchq.settings import Settings

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return data


def test_redis_keeps_everything(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    assert redis["image"].startswith("redis:7")
    cmd = redis["command"]
    assert "--appendonly yes" in cmd and "--maxmemory-policy noeviction" in cmd
    assert any(v.endswith(":/data") for v in redis["volumes"])


def test_workers_scale_and_use_known_settings(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    assert "container_name" not in worker  # a fixed name would forbid --scale
    assert worker["command"] == ["batchq", "worker"]
    env = worker["environment"]
    assert env["BATCHQ_REDIS_URL"].endswith("redis://redis:6379/0}")
    assert env["OLLAMA_HOST"].endswith("http://ollama:11434}")
    fields = set(Settings.model_fields)
    for name in env:
        if name.startswith("BATCHQ_") and name != "BATCHQ_REDIS_URL":
            assert name.removeprefix("BATCHQ_").lower() in fields, name
    assert compose["services"]["ollama"]["image"] == "ollama/ollama"


def test_systemd_unit_gives_the_grace_period_time() -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((ROOT / "deploy" / "batchq-worker@.service").read_text())
    service = parser["Service"]
    assert service["ExecStart"].endswith("batchq worker")
    assert service["KillSignal"] == "SIGTERM" and service["Restart"] == "always"
    env = dict(
        line.split("=", 1)
        for line in (ROOT / "deploy" / "batchq-worker@.service").read_text().splitlines()
        if line.startswith("Environment=")
        for line in [line.removeprefix("Environment=")]
    )
    assert int(service["TimeoutStopSec"]) > int(env["BATCHQ_SHUTDOWN_GRACE"])
    fields = set(Settings.model_fields)
    for name in env:
        if name.startswith("BATCHQ_") and name != "BATCHQ_REDIS_URL":
            assert name.removeprefix("BATCHQ_").lower() in fields, name


def test_dockerfile_installs_both_packages() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "COPY batchq" in text and "COPY workers" in text and "pip install" in text


def _compose_command() -> list[str] | None:
    """Docker's compose plugin, else the standalone docker-compose (Debian's package)."""
    if shutil.which("docker") and (
        subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    ):
        return ["docker", "compose"]
    return ["docker-compose"] if shutil.which("docker-compose") else None


COMPOSE = _compose_command()


@pytest.mark.skipif(COMPOSE is None, reason="neither docker compose nor docker-compose is here")
def test_docker_compose_config_parses(tmp_path: Path) -> None:
    assert COMPOSE is not None
    # Empty environment: every ${VAR:-default} must resolve to its default.
    out = subprocess.run(
        [*COMPOSE, "config"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin:/usr/local/bin"},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    resolved = yaml.safe_load(out.stdout)["services"]
    env = resolved["worker"]["environment"]
    assert env["BATCHQ_REDIS_URL"] == "redis://redis:6379/0"
    assert env["OLLAMA_HOST"] == "http://ollama:11434"
    assert resolved["cli"]["environment"] == env
    # The check can fail: the same file with a misspelt key is refused.
    (tmp_path / "compose.yaml").write_text(
        (ROOT / "compose.yaml").read_text().replace("stop_grace_period:", "stop_grace_periods:")
    )
    bad = subprocess.run([*COMPOSE, "config", "-q"], cwd=tmp_path, capture_output=True)
    assert bad.returncode != 0
