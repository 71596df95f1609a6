"""A simulated Ollama server over a real socket, for tests and benchmarks.

It speaks enough of Ollama's native API (generate, chat, embed, tags, ps, show, version) that the
official ``ollama`` client parses every reply, and models what matters to a batch queue: per-model
parallel slots with a FIFO wait, a bounded pending queue (503), LRU model residency with load
time, slot-dependent eval speed, and injected failures. Reply text is a pure function of
(seed, model, prompt), so a test can check that every result belongs to its prompt.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import hashlib
import json
import math
import random
import re
import signal
import threading
import time
from array import array
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from .errors import ConfigError

__all__ = [
    "SimConfig",
    "SimServer",
    "expected_embedding",
    "expected_response",
    "parse_model_speeds",
    "parse_models",
    "running_sim",
    "serve",
]

BUSY = "server busy, please try again.  maximum pending requests exceeded"
RUNNER_DIED = "llama runner process has terminated: exit status 2"
MIDSTREAM = "an error was encountered while running the model: unexpected EOF"
_WORDS = (
    "the a of to and in is it that for on with as was at by be this from or an are not but have"
    " had one all were when we there can been more which their if will each about up out them"
    " then she many some so these would other into has her two like him see time could no make"
    " first"
)
_VOCAB = _WORDS.split()  # 64 words: the low six bits of a hash byte pick one
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


_MAX_ARRIVALS = 100_000


def parse_models(text: str) -> tuple[str, ...]:
    """``a,b,c`` as given to ``batchq sim --models``."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise ValueError("give at least one model name")
    return names


def parse_model_speeds(text: str) -> tuple[tuple[str, float], ...]:
    """``NAME=RATE[,NAME=RATE...]`` as given to ``batchq sim --model-speeds``."""
    speeds: list[tuple[str, float]] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, eq, rate = part.rpartition("=")  # the last '=': names hold ':' but never '='
        try:
            value = float(rate)
        except ValueError:
            value = math.nan
        if not eq or not name.strip() or math.isnan(value):
            raise ValueError(f"{part!r} is not NAME=TOKENS_PER_SECOND, e.g. qwen3:8b=40")
        speeds.append((name.strip(), value))
    return tuple(speeds)


@dataclass
class SimConfig:
    """How the simulated server behaves; the defaults look like one 8B model on a consumer GPU.

    Rates <= 0 or infinite mean "instant". With B slots of a model busy, each request evaluates at
    ``rate * B**0.78 / B`` (measured Ollama scaling), where the rate is the model's entry in
    ``model_speeds`` or else ``eval_tokens_per_s``: models of different speeds make a model
    benchmark show a difference. Failure probabilities are drawn from a ``random.Random(seed)``
    per server, so a run's failure sequence is reproducible.
    """

    seed: int = 0
    models: tuple[str, ...] = field(
        default=("llama3.2", "qwen3:8b", "gemma3:4b", "nomic-embed-text"),
        metadata={"parse": parse_models, "help": "models served, comma-separated"},
    )
    model_speeds: tuple[tuple[str, float], ...] = field(
        default=(),
        metadata={
            "parse": parse_model_speeds,
            "help": "eval tokens/s of some models, overriding --eval-tokens-per-s for them, "
            "e.g. qwen3:8b=40,gemma3:4b=120 (each NAME must be one of --models)",
        },
    )
    parallel: int = 1
    max_queue: int = 512
    max_loaded: int = 1
    load_seconds: float = 0.0
    prompt_tokens_per_s: float = 2000.0
    eval_tokens_per_s: float = 100.0
    latency: float = 0.0
    response_tokens: int = 8
    fail_500: float = 0.0
    fail_503: float = 0.0
    fail_midstream: float = 0.0
    slow_rate: float = 0.0
    slow_seconds: float = 30.0
    embed_dim: int = 768  # nomic-embed-text's


def _words(seed: int, model: str, prompt: str, n: int) -> list[str]:
    if n <= 0:
        return []
    block = hashlib.sha256(f"{seed}\0{model}\0{prompt}".encode()).digest()
    words = [block.hex()[:12]]
    while len(words) < n:
        block = hashlib.sha256(block).digest()
        words.extend(_VOCAB[b & 63] for b in block[: n - len(words)])
    return words


def expected_response(model: str, prompt: str, *, seed: int = 0, tokens: int = 8) -> str:
    """The reply the simulator gives `model` (the name as sent) for `prompt`."""
    return " ".join(_words(seed, model, prompt, tokens))


def expected_embedding(model: str, text: str, *, seed: int = 0, dim: int = 768) -> list[float]:
    """The vector the simulator gives `model` (the name as sent) for `text`: L2-normalised, of
    float32 values like Ollama's. A shorter `dim` is what the request's ``dimensions`` gives."""
    raw: list[int] = []
    block = hashlib.sha256(f"{seed}\0{model}\0{text}".encode()).digest()
    while len(raw) < dim:
        raw.extend(int.from_bytes(block[i : i + 4], "big", signed=True) for i in range(0, 32, 4))
        block = hashlib.sha256(block).digest()
    norm = math.sqrt(sum(v * v for v in raw[:dim])) or 1.0
    return array("f", [v / norm for v in raw[:dim]]).tolist()


def _count_tokens(text: str) -> int:
    return max(1, len(text.split()))


def _seconds(amount: float, rate: float) -> float:
    # Zero, negative or infinite rates all mean "instant", so benchmarks can switch costs off.
    return amount / rate if 0 < rate < math.inf else 0.0


def _stamp(when: datetime | None = None) -> str:
    return (when or datetime.now(UTC)).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=_dumps(data), content_type="application/json")


def _text(chat: bool, text: str) -> dict[str, Any]:
    return {"message": {"role": "assistant", "content": text}} if chat else {"response": text}


def _describe(name: str) -> dict[str, Any]:
    digest = hashlib.sha256(name.encode()).hexdigest()
    full = name if ":" in name else f"{name}:latest"
    embed = "embed" in name
    family = "nomic-bert" if embed else re.sub(r"[\d.]+$", "", name.split(":")[0])
    size = re.search(r":(\d+(?:\.\d+)?)b$", name)
    details = {
        "parent_model": "",
        "format": "gguf",
        "family": family,
        "families": [family],
        "parameter_size": f"{size.group(1)}B" if size else "137M" if embed else "3.2B",
        "quantization_level": "F16" if embed else "Q4_K_M",
    }
    bytes_ = 1_000_000_000 + int(digest[:6], 16)
    return {"name": full, "model": full, "digest": digest, "size": bytes_, "details": details}


class _Fail(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class _ModelState:
    """Slots, residency pins and peak concurrency of one configured model."""

    __slots__ = ("busy", "idle", "peak", "refs", "waiters")

    def __init__(self) -> None:
        self.busy = 0  # slots held, i.e. requests being generated
        self.peak = 0
        self.refs = 0  # admitted requests pinning the model in memory
        self.waiters: deque[asyncio.Future[None]] = deque()
        self.idle = asyncio.Event()
        self.idle.set()


@dataclass(slots=True)
class _Job:
    model: str  # as sent; it seeds the reply text
    name: str  # the configured model it resolved to
    prompt: str
    n_prompt: int
    empty: bool
    stream: bool
    tokens: int
    reason: str


class SimServer:
    """A simulated Ollama; `await start()` it on a loop, or use `running_sim()` from sync code."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        self._rng = random.Random(self.config.seed)
        self._parallel = max(1, self.config.parallel)  # zero slots would hang every request
        self._names = {n: n for n in self.config.models}
        self._names |= {f"{n}:latest": n for n in self.config.models if ":" not in n}
        self._eval_rates = {name: self.config.eval_tokens_per_s for name in self.config.models}
        for model, rate in self.config.model_speeds:
            if model not in self._names:
                raise ConfigError(
                    f"a model speed is given for {model!r}, which the simulator does not serve "
                    f"(its models: {', '.join(self.config.models)})"
                )
            self._eval_rates[self._names[model]] = rate
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._url = ""
        self._new_runtime()
        self._clear_counters()

    def _new_runtime(self) -> None:
        # asyncio primitives bind to the loop that first uses them, so each start gets fresh ones.
        self._states = {name: _ModelState() for name in self.config.models}
        self._loaded: OrderedDict[str, float] = OrderedDict()  # model -> last use (epoch s)
        self._sched = asyncio.Lock()
        self._waiting = 0
        self._in_flight = 0

    def _clear_counters(self) -> None:
        self._requests = 0
        self._by_status: dict[str, int] = {}
        self._prompts: dict[str, int] = {}
        # Arrival times (epoch s) of inference requests, for tests of global rate limits.
        self._arrivals: list[float] = []
        # The prompt of each arrival, by position: which batch a request came from, when a
        # test tags its prompts (the dispatch-fairness tests).
        self._arrival_prompts: list[str] = []
        for st in self._states.values():
            st.peak = st.busy

    @property
    def url(self) -> str:
        return self._url

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        for method, path, handler in (
            ("GET", "/", self._root),
            ("GET", "/api/version", self._version),
            ("GET", "/api/tags", self._tags),
            ("GET", "/api/ps", self._ps),
            ("POST", "/api/show", self._show),
            ("POST", "/api/generate", functools.partial(self._infer, chat=False)),
            ("POST", "/api/chat", functools.partial(self._infer, chat=True)),
            ("POST", "/api/embed", self._embed),
            ("GET", "/_sim/stats", self._stats_handler),
            ("POST", "/_sim/reset", self._reset_handler),
        ):
            app.router.add_route(method, path, handler)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._new_runtime()
        self._loop = asyncio.get_running_loop()
        # handler_cancellation: a client that hangs up stops waiting for its slot, like Ollama.
        # A short shutdown_timeout: stop() must not wait out a 30 s "slow" request.
        runner = web.AppRunner(
            self.app(), access_log=None, handler_cancellation=True, shutdown_timeout=0.25
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port, backlog=2048).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound = runner.addresses[0][1]
        self._url = f"http://[{host}]:{bound}" if ":" in host else f"http://{host}:{bound}"
        return self._url

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    def _on_loop(self, fn: Callable[[], Any]) -> Any:
        # Counters live on the server's loop; another thread reads them through that loop.
        loop = self._loop
        if loop is None or not loop.is_running() or _running_loop() is loop:
            return fn()

        async def call() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), loop).result(timeout=30)

    def stats(self) -> dict[str, Any]:
        """Counters since start or the last reset; the same as ``GET /_sim/stats``.

        ``requests``/``by_status`` count replies (499: the client hung up first), ``prompts``
        counts requests received per prompt text (each embed input counts once), ``in_flight``
        is requests admitted and not yet answered, whether waiting or generating.
        """
        return dict(self._on_loop(self._snapshot))

    def reset_stats(self) -> None:
        self._on_loop(self._clear_counters)

    def _snapshot(self) -> dict[str, Any]:
        return {
            "requests": self._requests,
            "by_status": dict(self._by_status),
            "max_concurrency": {m: s.peak for m, s in self._states.items() if s.peak},
            "in_flight": self._in_flight,
            "prompts": dict(self._prompts),
            "arrivals": list(self._arrivals),
            "arrival_prompts": list(self._arrival_prompts),
        }

    @web.middleware
    async def _middleware(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        if request.path.startswith("/_sim/"):
            return await handler(request)
        status = 499  # stays so if the client hangs up and the handler is cancelled
        try:
            resp = await handler(request)
            status = resp.status
            return resp
        except _Fail as e:
            status = e.status
            return _json({"error": e.message}, e.status)
        except web.HTTPException as e:
            status = e.status
            raise
        except ConnectionResetError:
            status = 499  # the client went away mid-stream; this reply is never delivered
            return web.Response(status=499)
        finally:
            self._requests += 1
            self._by_status[str(status)] = self._by_status.get(str(status), 0) + 1

    # -- metadata endpoints --------------------------------------------------------------------

    async def _root(self, request: web.Request) -> web.Response:
        return web.Response(text="Ollama is running")

    async def _version(self, request: web.Request) -> web.Response:
        return _json({"version": "0.12.0"})

    async def _tags(self, request: web.Request) -> web.Response:
        when = _stamp(datetime(2025, 1, 1, tzinfo=UTC))
        return _json({"models": [_describe(m) | {"modified_at": when} for m in self.config.models]})

    async def _ps(self, request: web.Request) -> web.Response:
        models = []
        for m, used in reversed(self._loaded.items()):
            info = _describe(m)
            expires = _stamp(datetime.fromtimestamp(used + 300, UTC))  # keep_alive 5m
            models.append(info | {"expires_at": expires, "size_vram": info["size"]})
            models[-1]["context_length"] = 4096
        return _json({"models": models})

    async def _show(self, request: web.Request) -> web.Response:
        body = await _body(request, "ShowRequest")
        model = _field(body, "model", str, "ShowRequest") or ""
        if not model:
            raise _Fail(400, "model is required")
        name = self._resolve(model)
        details = _describe(name)["details"]
        arch, embed = details["family"], "embed" in name
        info = {"general.architecture": arch, "general.parameter_count": 3_212_749_888}
        info |= {f"{arch}.context_length": 131072, f"{arch}.embedding_length": 3072}
        return _json(
            {
                "modelfile": f"# Modelfile generated by batchq sim\nFROM {name}\n",
                "parameters": "" if embed else "temperature 0.8\ntop_p 0.9",
                "template": "{{ .Prompt }}",
                "details": details,
                "model_info": info,
                "capabilities": ["embedding"] if embed else ["completion"],
                "modified_at": _stamp(datetime(2025, 1, 1, tzinfo=UTC)),
            }
        )

    async def _stats_handler(self, request: web.Request) -> web.Response:
        return _json(self._snapshot())

    async def _reset_handler(self, request: web.Request) -> web.Response:
        self._clear_counters()
        return _json({"status": "ok"})

    # -- scheduling ----------------------------------------------------------------------------

    def _resolve(self, model: str) -> str:
        name = self._names.get(model)
        if name is None:
            raise _Fail(404, f"model '{model}' not found")
        return name

    def _admit(self, name: str) -> tuple[bool, bool]:
        """Roll the failure dice and apply the pending-queue bound; returns (midstream, slow)."""
        cfg, rng = self.config, self._rng
        # Always four draws, so the failure sequence depends only on the seed and request order.
        r503, r500, rmid, rslow = rng.random(), rng.random(), rng.random(), rng.random()
        if r503 < cfg.fail_503:
            raise _Fail(503, BUSY)
        if r500 < cfg.fail_500:
            raise _Fail(500, RUNNER_DIED)
        st = self._states[name]
        ready = name in self._loaded and st.busy < self._parallel and not st.waiters
        if not (ready and not self._sched.locked()) and self._waiting >= cfg.max_queue:
            raise _Fail(503, BUSY)
        return rmid < cfg.fail_midstream, rslow < cfg.slow_rate

    @contextlib.asynccontextmanager
    async def _slot(self, name: str) -> AsyncIterator[_ModelState]:
        """Hold `name` resident and one of its slots, both granted in FIFO order."""
        st = self._states[name]
        self._waiting += 1
        try:
            async with self._sched:  # one load at a time, and it blocks the queue, as in Ollama
                if name not in self._loaded:
                    await self._load(name)
                self._loaded[name] = time.time()
                self._loaded.move_to_end(name)
                st.refs += 1
                st.idle.clear()
            try:
                await self._acquire(st)
            except BaseException:
                self._unpin(st)
                raise
        finally:
            self._waiting -= 1
        try:
            st.peak = max(st.peak, st.busy)
            yield st
        finally:
            self._release(st)
            self._unpin(st)

    async def _load(self, name: str) -> None:
        limit = self.config.max_loaded
        while limit > 0 and len(self._loaded) >= limit:
            victim = next(iter(self._loaded))
            # Like Ollama, the evicted model first finishes every request already admitted to it.
            await self._states[victim].idle.wait()
            del self._loaded[victim]
        if self.config.load_seconds > 0:
            await asyncio.sleep(self.config.load_seconds)

    async def _acquire(self, st: _ModelState) -> None:
        if st.busy < self._parallel and not st.waiters:
            st.busy += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        st.waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._release(st)  # the slot was handed over just as we were cancelled
            else:
                with contextlib.suppress(ValueError):
                    st.waiters.remove(fut)
            raise

    @staticmethod
    def _release(st: _ModelState) -> None:
        while st.waiters:
            fut = st.waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # hand the slot straight over, so FIFO order holds
                return
        st.busy -= 1

    @staticmethod
    def _unpin(st: _ModelState) -> None:
        st.refs -= 1
        if st.refs == 0:
            st.idle.set()

    def _stall(self, n_prompt: int, slow: bool) -> float:
        cfg = self.config
        stall = _seconds(n_prompt, cfg.prompt_tokens_per_s) + max(cfg.latency, 0.0)
        return stall + (max(cfg.slow_seconds, 0.0) if slow else 0.0)

    # -- inference -----------------------------------------------------------------------------

    async def _parse(self, request: web.Request, chat: bool) -> _Job:
        go_type = "ChatRequest" if chat else "GenerateRequest"
        body = await _body(request, go_type)
        model = _field(body, "model", str, go_type) or ""
        if chat:
            if not model:
                raise _Fail(400, "model is required")
            messages = _field(body, "messages", list, go_type) or []
            if not all(isinstance(m, dict) for m in messages):
                raise _Fail(400, "json: cannot unmarshal into Go value of type api.Message")
            user = [m for m in messages if m.get("role") == "user"]
            prompt = str(user[-1].get("content") or "") if user else ""
            n_prompt = _count_tokens(" ".join(str(m.get("content") or "") for m in messages))
            empty = not messages
        else:
            prompt = _field(body, "prompt", str, go_type) or ""
            n_prompt, empty = _count_tokens(prompt), not prompt
        name = self._resolve(model)
        if "embed" in name:
            raise _Fail(400, f'"{model}" does not support {"chat" if chat else "generate"}')
        stream = _field(body, "stream", bool, go_type) is not False  # Ollama streams by default
        options = _field(body, "options", dict, go_type) or {}
        num_predict = options.get("num_predict", -1)
        if isinstance(num_predict, bool) or not isinstance(num_predict, int | float):
            raise _Fail(500, 'option "num_predict" must be of type integer')
        tokens, reason = self.config.response_tokens, "stop"
        if 0 <= num_predict < tokens:
            tokens, reason = int(num_predict), "length"
        return _Job(model, name, prompt, n_prompt, empty, stream, tokens, reason)

    async def _infer(self, request: web.Request, *, chat: bool) -> web.StreamResponse:
        start = time.perf_counter_ns()
        job = await self._parse(request, chat)
        self._prompts[job.prompt] = self._prompts.get(job.prompt, 0) + 1
        if len(self._arrivals) < _MAX_ARRIVALS:
            self._arrivals.append(time.time())
            self._arrival_prompts.append(job.prompt)
        midstream, slow = self._admit(job.name)
        self._in_flight += 1
        try:
            async with self._slot(job.name) as st:
                loaded = time.perf_counter_ns()
                head = {"model": job.model, "created_at": _stamp()}
                if job.empty:  # Ollama answers an empty prompt by only loading the model
                    return _json(head | _text(chat, "") | {"done": True, "done_reason": "load"})
                words = _words(self.config.seed, job.model, job.prompt, job.tokens)
                # Per-request speed shrinks as more slots share the GPU (see SimConfig docs).
                rate = self._eval_rates[job.name]
                per_token = _seconds(st.busy, rate * st.busy**0.78)
                if (stall := self._stall(job.n_prompt, slow)) > 0:
                    await asyncio.sleep(stall)
                evaled = time.perf_counter_ns()
                if midstream:
                    words = words[: max(1, len(words) // 2)]
                resp = None
                if not job.stream:
                    if per_token and words:
                        await asyncio.sleep(per_token * len(words))
                    if midstream:
                        raise _Fail(500, MIDSTREAM)
                else:
                    resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
                    t_eval = time.monotonic()
                    for i, word in enumerate(words):
                        if per_token:
                            due = t_eval + per_token * (i + 1)  # a deadline, so sleeps don't drift
                            await asyncio.sleep(max(0.0, due - time.monotonic()))
                        piece = _text(chat, word if i == 0 else f" {word}")
                        await _write(
                            request, resp, {**head, "created_at": _stamp(), **piece, "done": False}
                        )
                    if midstream:
                        await _write(request, resp, {"error": MIDSTREAM})
                        await resp.write_eof()
                        return resp
                end = time.perf_counter_ns()
                final = head | _text(chat, "" if resp else " ".join(words))
                final |= {
                    "created_at": _stamp(),
                    "done": True,
                    "done_reason": job.reason,
                    "total_duration": end - start,
                    "load_duration": loaded - start,
                    "prompt_eval_count": job.n_prompt,
                    "prompt_eval_duration": evaled - loaded,
                    "eval_count": len(words),
                    "eval_duration": end - evaled,
                }
                if not chat:
                    digest = hashlib.sha256(job.prompt.encode()).digest()
                    final["context"] = [digest[i % 32] * 128 + i for i in range(job.n_prompt)]
                if resp is None:
                    return _json(final)
                await _write(request, resp, final)
                await resp.write_eof()
                return resp
        finally:
            self._in_flight -= 1

    async def _embed(self, request: web.Request) -> web.Response:
        start = time.perf_counter_ns()
        body = await _body(request, "EmbedRequest")
        model = _field(body, "model", str, "EmbedRequest") or ""
        name = self._resolve(model)
        texts = body.get("input") or []
        texts = [texts] if isinstance(texts, str) else texts
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise _Fail(400, "invalid input type")
        dim = self.config.embed_dim
        dimensions = _field(body, "dimensions", int, "EmbedRequest")
        if dimensions:  # like Ollama: a shorter vector, normalised again; a longer one is ignored
            dim = min(dim, dimensions)
        for t in texts:
            self._prompts[t] = self._prompts.get(t, 0) + 1
        _, slow = self._admit(name)
        n_prompt = sum(_count_tokens(t) for t in texts)
        self._in_flight += 1
        try:
            async with self._slot(name):
                loaded = time.perf_counter_ns()
                if (stall := self._stall(n_prompt, slow)) > 0:
                    await asyncio.sleep(stall)
                seed = self.config.seed
                vectors = [expected_embedding(model, t, seed=seed, dim=dim) for t in texts]
                return _json(
                    {
                        "model": model,
                        "embeddings": vectors,
                        "total_duration": time.perf_counter_ns() - start,
                        "load_duration": loaded - start,
                        "prompt_eval_count": n_prompt,
                    }
                )
        finally:
            self._in_flight -= 1


async def _body(request: web.Request, go_type: str) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        raise _Fail(400, "missing request body")
    try:
        body = json.loads(raw)
    except ValueError as e:
        raise _Fail(400, f"invalid character in request body: {e}") from None
    if not isinstance(body, dict):
        kind = _KINDS.get(type(body), "value")
        raise _Fail(400, f"json: cannot unmarshal {kind} into Go value of type api.{go_type}")
    return body


_KINDS: dict[type, str] = {
    bool: "bool",
    int: "number",
    float: "number",
    str: "string",
    list: "array",
}
_GO_TYPES = {str: "string", bool: "bool", list: "[]api.Message", dict: "map[string]interface {}"}
_GO_TYPES[int] = "int"


def _field(body: dict[str, Any], key: str, kind: type, go_type: str) -> Any:
    value = body.get(key)
    # bool is an int subclass in Python but not in Go's decoder, so check it both ways.
    if value is None or (isinstance(value, kind) and isinstance(value, bool) == (kind is bool)):
        return value
    got, want = _KINDS.get(type(value), "object"), _GO_TYPES[kind]
    raise _Fail(
        400, f"json: cannot unmarshal {got} into Go struct field {go_type}.{key} of type {want}"
    )


async def _write(request: web.Request, resp: web.StreamResponse, obj: Any) -> None:
    # Headers go out with the first chunk, so errors before it keep their real status.
    if not resp.prepared:
        await resp.prepare(request)
    await resp.write(_dumps(obj).encode() + b"\n")


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


@contextlib.contextmanager
def running_sim(config: SimConfig | None = None, *, port: int = 0) -> Iterator[SimServer]:
    """Run a simulator on a background thread with its own loop, for sync tests and benchmarks."""
    server = SimServer(config)
    ready: concurrent.futures.Future[tuple[asyncio.AbstractEventLoop, asyncio.Event]]
    ready = concurrent.futures.Future()

    async def main() -> None:
        stop = asyncio.Event()
        try:
            await server.start(port=port)
        except BaseException as e:
            ready.set_exception(e)
            return
        ready.set_result((asyncio.get_running_loop(), stop))
        await stop.wait()
        await server.stop()

    thread = threading.Thread(target=asyncio.run, args=(main(),), name="batchq-sim", daemon=True)
    thread.start()
    loop, stop = ready.result(timeout=30)
    try:
        yield server
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=30)


def serve(config: SimConfig, host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM: the `batchq sim` command."""

    async def main() -> None:
        server = SimServer(config)
        url = await server.start(host, port)
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        print(f"batchq sim (simulated Ollama) listening on {url}", flush=True)
        try:
            await stop.wait()
        finally:
            await server.stop()

    asyncio.run(main())
