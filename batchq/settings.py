"""One typed settings object, read from ``BATCHQ_*`` variables (plus ``REDIS_URL`` and
``OLLAMA_HOST``) and overridden by keyword arguments, which is how the CLI and tests build it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from batchq.errors import ConfigError
from batchq.signing import webhook_key

__all__ = [
    "DEFAULT_OLLAMA_HOST",
    "Settings",
    "build_settings",
    "default_home",
    "normalize_ollama_host",
]

DEFAULT_OLLAMA_HOST = "http://127.0.0.1:11434"


def default_home() -> Path:
    """The per-user data directory of the embedded server (XDG on Linux, Library on macOS)."""
    xdg = os.environ.get("XDG_DATA_HOME")
    if xdg:
        return Path(xdg) / "batchq"
    home = Path.home()
    if (home / "Library").is_dir() and os.uname().sysname == "Darwin":
        return home / "Library" / "Application Support" / "batchq"
    return home / ".local" / "share" / "batchq"


def normalize_ollama_host(value: str) -> str:
    """Accept what Ollama itself accepts in ``OLLAMA_HOST``: ``host``, ``host:port``,
    ``:port``, ``0.0.0.0`` or a full URL, and return ``scheme://host:port[/path]``."""
    value = value.strip().rstrip("/")
    if not value:
        return DEFAULT_OLLAMA_HOST
    if "://" not in value:
        value = "http://" + value
    parts = urlsplit(value)
    host = parts.hostname or "127.0.0.1"
    # 0.0.0.0 is a listen address; a client must connect to a real one.
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    default_port = 443 if parts.scheme == "https" else 11434
    port = parts.port or (default_port if parts.scheme in ("http", "https") else 11434)
    return f"{parts.scheme}://{host}:{port}{parts.path}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="BATCHQ_", extra="forbid", populate_by_name=True, frozen=True
    )

    # Where things are.
    redis_url: str | None = Field(
        default=None, validation_alias=AliasChoices("BATCHQ_REDIS_URL", "REDIS_URL")
    )
    ollama_host: str = Field(
        default=DEFAULT_OLLAMA_HOST,
        validation_alias=AliasChoices("BATCHQ_OLLAMA_HOST", "OLLAMA_HOST"),
    )
    home: Path = Field(default_factory=default_home)
    prefix: str = "batchq"

    # Worker behaviour.
    # "auto": one in-flight limit per (Ollama host, model), shared by the host's workers and
    # found from the replies (batchq.store.autolimit); a number: that many per worker, fixed.
    concurrency: int | Literal["auto"] = Field(default="auto")
    # With auto, the most requests one worker sends at once (its share of the shared limit
    # never exceeds it).
    max_concurrency: int = Field(default=32, ge=1, le=10_000)
    # Requests a worker sends beyond its concurrency, to wait in Ollama's own queue: when a
    # slot frees, Ollama starts the next one at once instead of after the worker's round trip.
    # None: a quarter of the concurrency, rounded up (with auto: none, the limit allows for it).
    ollama_queue: int | None = Field(default=None, ge=0, le=10_000)
    # Jobs a worker claims beyond its concurrency, ready to go the moment a request ends;
    # None: a quarter of the concurrency, rounded up.
    prefetch: int | None = Field(default=None, ge=0, le=10_000)
    rate: float | None = Field(default=None, gt=0)
    # The most inputs one /api/embed carries: consecutive embedding items of one model and
    # options share a request up to this (workers.embed_groups); 1 sends each item alone.
    embed_batch: int = Field(default=64, ge=1, le=4096)
    # Set at worker start-up for its endpoint, in Redis, for every worker of that endpoint.
    global_rate: float | None = Field(default=None, ge=0)
    global_concurrency: int | None = Field(default=None, ge=0)
    global_tpm: int | None = Field(default=None, ge=0)
    # The longest a request waits for its next bytes from Ollama (the reply to start, then
    # each chunk of it): a silent server fails fast. The whole request is bounded by
    # reply_deadline (below).
    timeout: float = Field(default=600.0, gt=0)
    connect_timeout: float = Field(default=10.0, gt=0)
    max_attempts: int = Field(default=5, ge=1, le=1000)
    retry_delay: float = Field(default=1.0, ge=0)
    retry_max_delay: float = Field(default=300.0, ge=0)
    stream: bool = True
    poll_delay: float = Field(default=0.05, gt=0)
    dispatch_window: float = Field(default=2.0, ge=1)
    # The longest a model with ready work waits while its host serves another model at the
    # same priority (see batchq.store.models): each switch costs Ollama a model load, so turns
    # are long next to a load (seconds), short next to a night's batch.
    model_switch_after: float = Field(default=120.0, gt=0)
    heartbeat: float = Field(default=5.0, gt=0)
    shutdown_grace: int = Field(default=30, ge=0)
    repair_after: float = Field(default=300.0, gt=0)
    # A worker's own Prometheus endpoint (batchq worker --metrics-port); none by default.
    metrics_port: int | None = Field(default=None, ge=0, le=65535)

    # Secrets and exposure.
    # Loopback unless told otherwise: the metrics name every batch.
    metrics_host: str = "127.0.0.1"
    # Host header values `batchq serve` answers besides its own names (comma-separated).
    allowed_hosts: str = ""
    # Keys `batchq serve` accepts on its OpenAI API routes (comma-separated; --api-key adds).
    api_keys: str = Field(default="", repr=False)
    # The largest file `POST /v1/files` takes; files live under home (batchq.api.filestore).
    max_file_bytes: int = Field(default=10 << 30, ge=1)
    # The largest body of `POST /v1/messages/batches` (Anthropic's own bound is 256 MB); read
    # as it arrives, one request at a time (batchq.api.message_body).
    max_message_batch_bytes: int = Field(default=2 << 30, ge=1)

    # Bounded replies (issue 12): what one reply from Ollama may take at most, so that a
    # generation that never ends (a model looping without num_predict) or a hostile server
    # cannot hold a worker's slot forever or eat its memory. The defaults fit real long
    # generations: 128k tokens at ~18 tokens/s in the deadline, at 16 bytes a token in the
    # text; at concurrency 16 (20 requests in flight with Ollama's queue) the streamed caps
    # hold at most 20 x (4 MiB line + 2 MiB text) = 120 MiB. Each breach fails the item at
    # once (batchq.backends.bounds).
    reply_deadline: float = Field(default=7200.0, gt=0)  # seconds per request, all of it
    reply_max_text_bytes: int = Field(default=2 << 20, ge=1024)  # UTF-8, thinking included
    reply_max_line_bytes: int = Field(default=4 << 20, ge=1024)  # one line of a stream
    reply_max_body_bytes: int = Field(default=64 << 20, ge=1024)  # a reply not streamed

    # Completion hooks (submit --notify).
    notify_attempts: int = Field(default=5, ge=1, le=100)
    notify_timeout: float = Field(default=10.0, gt=0)
    notify_retry_delay: float = Field(default=2.0, ge=0)

    # Safe webhooks (issue 12): hooks to private and loopback addresses (link-local ones are
    # always refused, see batchq.targets); the Standard Webhooks signing secret (see
    # batchq.signing), None: hooks go unsigned.
    notify_allow_private: bool = True
    webhook_secret: SecretStr | None = None
    # OpenAI's batch webhooks (batchq.api.webhooks): where ``serve`` has the batch.* events of
    # the batches made through /v1/batches sent (None: none are), and how often it looks for
    # those batches' finish (it writes their output files first, then announces them).
    openai_webhook_url: str | None = None
    openai_webhook_every: float = Field(default=1.0, gt=0, le=3600)

    # Submission.
    max_line_bytes: int = Field(default=8 << 20, ge=1024)
    submit_chunk: int = Field(default=1000, ge=1)
    job_ttl: float = Field(default=30 * 86400, gt=0)

    # Bounds at the door (issue 12). Seconds a submission's staged items wait for its next
    # chunk before they expire (batchq.store.staging): the longest pause a slow producer of
    # ``batchq submit -`` may take.
    staging_ttl: float = Field(default=3600.0, gt=0)

    @field_validator("concurrency", mode="before")
    @classmethod
    def _check_concurrency(cls, v: object) -> object:
        if isinstance(v, str):
            text = v.strip().lower()
            if text == "auto":
                return "auto"
            if not text.isdigit():
                raise ValueError('must be "auto" or a whole number of requests')
            v = int(text)
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 10_000:
            raise ValueError('must be "auto" or a number from 1 to 10000')
        return v

    @property
    def auto_concurrency(self) -> bool:
        """The limit is self-tuned, shared per (host, model) through Redis."""
        return self.concurrency == "auto"

    @property
    def worker_concurrency(self) -> int:
        """Requests one worker may run at once beyond Ollama's queue: the fixed concurrency,
        or with auto the ceiling of its share."""
        return self.max_concurrency if self.concurrency == "auto" else self.concurrency

    @field_validator("ollama_host")
    @classmethod
    def _normalize_host(cls, v: str) -> str:
        # A comma-separated list gives a worker several hosts (see batchq.backends.pool).
        return ",".join(normalize_ollama_host(h) for h in v.split(",") if h.strip()) or (
            DEFAULT_OLLAMA_HOST
        )

    @field_validator("webhook_secret")
    @classmethod
    def _check_secret(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and v.get_secret_value().strip():
            webhook_key(v.get_secret_value())  # ValueError: pydantic names the field
            return v
        return None  # set but empty: unsigned, as if unset

    @property
    def webhook_key(self) -> bytes | None:
        """The HMAC key hooks are signed with, None if they go unsigned."""
        return webhook_key(self.webhook_secret.get_secret_value()) if self.webhook_secret else None

    @property
    def max_in_flight(self) -> int:
        """Requests a worker may have at Ollama at once: its concurrency, plus the ones
        waiting in Ollama's queue."""
        return self.worker_concurrency + self.ollama_queue_size

    @property
    def ollama_queue_size(self) -> int:
        if self.ollama_queue is not None:
            return self.ollama_queue
        # With auto the shared limit already lets about one request wait in Ollama's queue.
        return 0 if self.auto_concurrency else self._quarter

    @property
    def jobs_per_worker(self) -> int:
        """What arq may run at once: the requests in flight plus the jobs waiting for one."""
        prefetch = self.prefetch if self.prefetch is not None else self._quarter
        return self.max_in_flight + prefetch

    @property
    def _quarter(self) -> int:
        """A quarter of the concurrency, rounded up: the default queue and prefetch."""
        return -(-self.worker_concurrency // 4)

    @property
    def ollama_hosts(self) -> list[str]:
        return self.ollama_host.split(",")

    @property
    def api_key_list(self) -> list[str]:
        return [k.strip() for k in self.api_keys.split(",") if k.strip()]

    @property
    def allowed_host_names(self) -> list[str]:
        return [h.strip() for h in self.allowed_hosts.split(",") if h.strip()]

    @field_validator("prefix")
    @classmethod
    def _check_prefix(cls, v: str) -> str:
        if not v or any(c in v for c in " {}*?[]"):
            raise ValueError("prefix must be non-empty and free of spaces, braces and globs")
        return v

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        scheme = urlsplit(v).scheme
        if scheme not in ("redis", "rediss", "unix", "redis+sentinel"):
            raise ValueError("must start with redis://, rediss://, unix:// or redis+sentinel://")
        return v

    @model_validator(mode="after")
    def _check_delays(self) -> Settings:
        if self.retry_max_delay < self.retry_delay:
            raise ValueError("retry_max_delay must be at least retry_delay")
        return self

    @property
    def job_timeout(self) -> float:
        """arq's own timeout is terminal (no retry), so it must only ever fire after ours; a
        prefetched job may first wait for another request to end before sending its own, and
        each request is bounded by the reply deadline (which covers connecting and reading)."""
        return 2 * (self.reply_deadline + self.connect_timeout) + 30.0

    def with_overrides(self, **kwargs: Any) -> Settings:
        """A copy with the non-None values of ``kwargs`` applied and validated."""
        data = self.model_dump()
        data.update({k: v for k, v in kwargs.items() if v is not None})
        return Settings(**data)


def build_settings(base: Settings | None = None, **overrides: Any) -> Settings:
    """``base`` (else the environment's settings) with the non-None ``overrides``; an invalid
    value is a :class:`ConfigError` naming the setting, not pydantic's multi-line report."""
    try:
        if base is None:
            return Settings(**{k: v for k, v in overrides.items() if v is not None})
        return base.with_overrides(**overrides)
    except ValidationError as e:
        first = e.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"invalid setting {field}: {first['msg']}") from None
