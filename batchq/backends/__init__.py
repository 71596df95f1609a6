"""Talking to inference servers: the :class:`~batchq.backends.base.Backend` protocol and the
records it returns (``base``), its one implementation, Ollama's native API (``ollama``), and the
pool of hosts a worker spreads its requests over (``pool``), which builds every backend through
one factory. Its failures are :class:`~batchq.errors.BackendError` and its two kinds.

The worker, ``bench``, the runner and status know only the protocol and the error names; only
this package knows Ollama's paths, reply shapes and status codes.

May import the core (``errors``, ``settings``, ``clock``, ``models``, ``vectors``) and the store
(``keys``, ``admission``); nothing from the CLI, the workers, the runner, bench or the monitor.
Nothing is imported here, so that importing the protocol does not load an HTTP client.
"""

__all__: list[str] = []
