from __future__ import annotations

import base64
from pathlib import Path

import pytest
from pydantic import ValidationError

from batchq.errors import ConfigError
from batchq.settings import DEFAULT_OLLAMA_HOST, Settings, build_settings, normalize_ollama_host


@pytest.mark.parametrize(
    ("value", "url"),
    [
        ("", DEFAULT_OLLAMA_HOST),
        ("0.0.0.0", "http://127.0.0.1:11434"),
        ("0.0.0.0:8080", "http://127.0.0.1:8080"),
        ("gpu-box", "http://gpu-box:11434"),
        ("gpu-box:1234", "http://gpu-box:1234"),
        ("http://gpu-box", "http://gpu-box:11434"),
        ("https://ollama.example.org", "https://ollama.example.org:443"),
        ("https://ollama.example.org/proxy/", "https://ollama.example.org:443/proxy"),
        ("[::1]:11434", "http://[::1]:11434"),
    ],
)
def test_ollama_host_like_ollama_reads_it(value: str, url: str) -> None:
    assert normalize_ollama_host(value) == url


def test_environment_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://generic:6379")
    monkeypatch.setenv("OLLAMA_HOST", "box:1")
    assert Settings().redis_url == "redis://generic:6379"
    assert Settings().ollama_host == "http://box:1"
    monkeypatch.setenv("BATCHQ_REDIS_URL", "rediss://:pw@mine:6380/2")
    assert Settings().redis_url == "rediss://:pw@mine:6380/2"
    monkeypatch.setenv("BATCHQ_CONCURRENCY", "12")
    s = Settings(concurrency=3)  # explicit arguments (the CLI's flags) win
    assert s.concurrency == 3 and s.with_overrides(rate=2.5).rate == 2.5


@pytest.mark.parametrize(
    "kwargs",
    [
        {"redis_url": "http://nope"},
        {"concurrency": 0},
        {"concurrency": "many"},
        {"concurrency": True},
        {"max_concurrency": 0},
        {"ollama_queue": -1},
        {"prefix": "a b"},
        {"retry_delay": 10, "retry_max_delay": 1},
        {"timeout": 0},
        {"unknown": 1},
    ],
)
def test_invalid_settings(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Settings(**kwargs)  # type: ignore[arg-type]


def test_arq_never_times_out_before_batchq() -> None:
    s = Settings(timeout=120, connect_timeout=5)
    assert s.job_timeout > s.timeout + s.connect_timeout
    # The deadline bounds a whole request; a prefetched job may wait out another one first.
    for deadline in (60.0, 7200.0, 86400.0):
        s = Settings(reply_deadline=deadline)
        assert s.job_timeout > 2 * s.reply_deadline


@pytest.mark.parametrize(
    ("concurrency", "queue", "in_flight", "jobs"),
    [(1, None, 2, 3), (4, None, 5, 6), (16, None, 20, 24), (16, 0, 16, 20), (2, 5, 7, 8)],
)
def test_requests_in_flight_are_the_concurrency_plus_ollamas_queue(
    monkeypatch: pytest.MonkeyPatch, concurrency: int, queue: int | None, in_flight: int, jobs: int
) -> None:
    # By default a quarter more, rounded up, wait in Ollama's own queue; arq runs the prefetch
    # (also a quarter of the concurrency) on top.
    s = Settings(concurrency=concurrency, ollama_queue=queue)
    assert (s.max_in_flight, s.jobs_per_worker) == (in_flight, jobs)
    monkeypatch.setenv("BATCHQ_OLLAMA_QUEUE", "0")
    assert Settings(concurrency=concurrency).max_in_flight == concurrency


def test_concurrency_is_auto_by_default_with_a_ceiling_per_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s = Settings()
    assert s.concurrency == "auto" and s.auto_concurrency
    # The shared limit governs; a worker sends at most its ceiling, none extra for Ollama's
    # queue (the limit lets about one wait), and claims a quarter more.
    assert (s.worker_concurrency, s.max_in_flight, s.jobs_per_worker) == (32, 32, 40)
    assert Settings(max_concurrency=8).jobs_per_worker == 10
    monkeypatch.setenv("BATCHQ_CONCURRENCY", "6")
    assert Settings().concurrency == 6 and not Settings().auto_concurrency
    monkeypatch.setenv("BATCHQ_CONCURRENCY", "AUTO")
    assert Settings().concurrency == "auto"
    assert Settings(concurrency="4").max_in_flight == 5  # type: ignore[arg-type]


def test_every_setting_is_in_the_readmes_configuration_table() -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = "\n".join(line for line in section.splitlines() if line.startswith("| `"))
    missing = [name for name in Settings.model_fields if f"`BATCHQ_{name.upper()}`" not in rows]
    assert not missing, missing


def test_the_webhook_secret_is_checked_and_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    key = b"k" * 32
    secret = "whsec_" + base64.b64encode(key).decode()
    monkeypatch.setenv("BATCHQ_WEBHOOK_SECRET", secret)
    s = Settings()
    assert s.webhook_key == key
    assert secret not in repr(s) and secret not in str(s.model_dump())
    assert s.with_overrides(concurrency=2).webhook_key == key
    monkeypatch.setenv("BATCHQ_WEBHOOK_SECRET", "")
    assert Settings().webhook_key is None  # set but empty: unsigned
    monkeypatch.delenv("BATCHQ_WEBHOOK_SECRET")
    assert Settings().webhook_key is None
    with pytest.raises(ConfigError, match=r"webhook_secret.*whsec_"):
        build_settings(webhook_secret="my password")


def test_private_hook_targets_are_allowed_unless_turned_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings().notify_allow_private is True
    monkeypatch.setenv("BATCHQ_NOTIFY_ALLOW_PRIVATE", "false")
    assert Settings().notify_allow_private is False
