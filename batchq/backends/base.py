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
from batchq.settings import Settings

__all__ = ["FIRST_TOKEN_FIELD", "Backend", "ConnectOptions", "LoadedModel", "Reply", "ReplyLimits"]

# Measured by batchq, not reported by the server: nanoseconds from sending a streamed request to
# the first chunk that carries generated text (thinking included). Absent when not streaming.
FIRST_TOKEN_FIELD = "time_to_first_token"


@dataclass(frozen=True, slots=True)
class ReplyLimits:
    """The most one reply may take: ``deadline`` seconds for the whole request, and at most
    ``max_text_bytes`` bytes of generated text (UTF-8, thinking included), ``max_line_bytes``
    in one line of a stream, ``max_body_bytes`` in a reply that is not streamed. The values
    are the settings of the same names with ``reply_`` in front."""

    deadline: float
    max_text_bytes: int
    max_line_bytes: int
    max_body_bytes: int

    @classmethod
    def of(cls, settings: Settings) -> ReplyLimits:
        return cls(
            deadline=settings.reply_deadline,
            max_text_bytes=settings.reply_max_text_bytes,
            max_line_bytes=settings.reply_max_line_bytes,
            max_body_bytes=settings.reply_max_body_bytes,
        )

    @classmethod
    def defaults(cls) -> ReplyLimits:
        """The settings' defaults, whatever the environment says (a client built by hand)."""
        fields = Settings.model_fields
        return cls(
            deadline=fields["reply_deadline"].default,
            max_text_bytes=fields["reply_max_text_bytes"].default,
            max_line_bytes=fields["reply_max_line_bytes"].default,
            max_body_bytes=fields["reply_max_body_bytes"].default,
        )


class ConnectOptions(TypedDict, total=False):
    """How a backend client talks to its server: ``timeout`` bounds each wait for data
    (seconds), ``connect_timeout`` the connection, ``limits`` the whole reply, ``stream`` asks
    for streamed replies, ``max_connections`` caps the requests at once."""

    timeout: float
    connect_timeout: float
    limits: ReplyLimits
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
