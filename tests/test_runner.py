from __future__ import annotations

import pytest

from batchq.runner import settings_env
from batchq.settings import Settings


def test_local_workers_get_the_settings_but_no_metrics_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Inherited from the user's environment, it would make every local worker but one fail.
    monkeypatch.setenv("BATCHQ_METRICS_PORT", "9465")
    env = settings_env(Settings(concurrency=7, metrics_port=9466), "redis://h:1/0")
    assert "BATCHQ_METRICS_PORT" not in env
    assert env["BATCHQ_CONCURRENCY"] == "7" and env["BATCHQ_REDIS_URL"] == "redis://h:1/0"
