"""The exceptions batchq raises, all rooted at :class:`BatchqError`.

```
BatchqError
├── ConfigError            bad settings or command-line values
├── InputError             a bad line in a submitted file (carries line number and field)
├── SubmissionIncomplete   staged items expired before the commit (carries the counts)
├── BatchNotFound          an unknown or malformed batch id (carries the batch id)
├── BatchStateError        the batch's state rules the operation out (carries id and state)
├── ItemNotFound           no item of the batch has this custom id (carries both ids)
├── RedisUnavailable       Redis cannot be reached
├── EmbeddedServerError    the embedded Valkey server could not be started
└── BackendError           one failed request to a backend, e.g. Ollama (carries status code, kind)
    ├── TransientBackendError  worth retrying: connection errors, timeouts, 5xx, 429, stream errors
    └── PermanentBackendError  retrying cannot help: 4xx such as 404 model not found
```

``OllamaError``, ``TransientOllamaError`` and ``PermanentOllamaError`` are the same three classes
under their earlier names (aliases, not subclasses): code that catches them keeps working, and
catches every backend's failures.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "BatchNotFound",
    "BatchStateError",
    "BatchqError",
    "ConfigError",
    "EmbeddedServerError",
    "InputError",
    "ItemNotFound",
    "OllamaError",
    "PermanentBackendError",
    "PermanentOllamaError",
    "RedisUnavailable",
    "SubmissionIncomplete",
    "TransientBackendError",
    "TransientOllamaError",
]


class BatchqError(Exception):
    """Base class of every error batchq raises on purpose."""


class ConfigError(BatchqError):
    """A setting or command-line value is invalid."""


class InputError(BatchqError):
    """A line of an input file is invalid.

    ``line`` is 1-based (the line number an editor shows); ``field`` names the offending
    field, dotted for nested ones (``body.messages[2].role``), or None for the whole line.
    """

    def __init__(self, message: str, *, line: int | None = None, field: str | None = None):
        self.line = line
        self.field = field
        self.reason = message
        where = []
        if line is not None:
            where.append(f"line {line}")
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


class SubmissionIncomplete(BatchqError):
    """Some of a submission's staged items expired before its commit: the gap between two
    chunks outlasted the staging TTL. Nothing was committed, nothing is left behind."""

    def __init__(self, staged: int, total: int, *, ttl_s: float) -> None:
        self.staged = staged
        self.total = total
        super().__init__(
            f"submission incomplete: staged {staged} of {total} items (the staging area "
            f"expired: a pause in the input outlasted BATCHQ_STAGING_TTL, {ttl_s:g} s; raise "
            "it or submit faster)"
        )


class BatchNotFound(BatchqError):
    """No batch has this id (or the id is not of batchq's form)."""

    def __init__(self, batch_id: str):
        self.batch_id = batch_id
        super().__init__(f"no batch with id {batch_id!r}")


class BatchStateError(BatchqError):
    """The batch is in a state that rules the operation out, e.g. pausing a finished batch."""

    def __init__(self, batch_id: str, state: str, message: str):
        self.batch_id = batch_id
        self.state = state
        super().__init__(f"batch {batch_id} is {state}: {message}")


class ItemNotFound(BatchqError):
    """No item of the batch has this custom id."""

    def __init__(self, batch_id: str, custom_id: str):
        self.batch_id = batch_id
        self.custom_id = custom_id
        super().__init__(f"batch {batch_id} has no item with custom_id {custom_id!r:.200}")


class RedisUnavailable(BatchqError):
    """Redis did not answer."""


class EmbeddedServerError(BatchqError):
    """The embedded Valkey server could not be started or reached."""


class BackendError(BatchqError):
    """One request to an inference server (Ollama) failed.

    ``kind`` is a short machine-readable reason (``model_not_found``, ``server_busy``,
    ``timeout``, ...); it becomes ``error.type`` in the batch's results.
    """

    def __init__(self, message: str, *, kind: str, status_code: int | None = None):
        self.message = message
        self.kind = kind
        self.status_code = status_code
        super().__init__(message)


class TransientBackendError(BackendError):
    """A failure that a later attempt may not meet."""


class PermanentBackendError(BackendError):
    """A failure that every later attempt would meet too."""


# The names of a time when Ollama was the only backend; public, so they stay.
OllamaError = BackendError
TransientOllamaError = TransientBackendError
PermanentOllamaError = PermanentBackendError
