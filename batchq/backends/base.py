"""What the rest of batchq needs from an inference server, and the records it gets back.

Backend-neutral: no paths, reply shapes or status codes here (those are the implementation's,
e.g. :mod:`batchq.backends.ollama`). Every method that talks to the server raises
:class:`~batchq.errors.TransientBackendError` or :class:`~batchq.errors.PermanentBackendError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, Self, TypedDict, runtime_checkable

from batchq.records import Item

__all__ = ["FIRST_TOKEN_FIELD", "Backend", "ConnectOptions", "LoadedModel", "Reply"]

# Measured by batchq, not reported by the server: nanoseconds from sending a streamed request to
# the first chunk that carries generated text (thinking included). Absent when not streaming.
FIRST_TOKEN_FIELD = "time_to_first_token"


class ConnectOptions(TypedDict, total=False):
    """How a backend client talks to its server: ``timeout`` bounds each read (seconds),
    ``connect_timeout`` the connection, ``stream`` asks for streamed replies,
    ``max_connections`` caps the requests at once."""

    timeout: float
    connect_timeout: float
    stream: bool
    max_connections: int


@dataclass(slots=True)
class Reply:
    """One item's answer: the text (empty for embeddings), the server's metrics, the model's
    thinking when it gave any, and an embed reply's vectors."""

    text: str
    metrics: dict[str, Any] = field(default_factory=dict)
    thinking: str | None = None
    # An embed reply's vectors, one per input, packed for storage (batchq.vectors.pack).
    embeddings: list[str] | None = None


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A model the server holds in memory now."""

    name: str
    size: int | None = None  # bytes in memory, all devices
    size_vram: int | None = None  # of which on the GPU; less than ``size`` means partly on CPU
    expires_at: datetime | None = None  # when it is unloaded if it stays unused


@runtime_checkable
class Backend(Protocol):
    """One inference server, as one worker process uses it. Opens its connections on first
    use, inside the event loop that uses it; ``aclose`` (or leaving ``async with``) ends them."""

    @property
    def base_url(self) -> str:
        """The server's address, which names it in logs and messages."""
        ...

    async def send(self, item: Item) -> Reply:
        """The reply to one item (generate, chat or embed, as ``item.endpoint`` says)."""
        ...

    async def version(self) -> str:
        """The server's version: the health check, which fails when it cannot be reached."""
        ...

    async def loaded_models(self) -> list[LoadedModel]:
        """The models the server holds in memory now."""
        ...

    async def aclose(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc: object) -> None: ...
