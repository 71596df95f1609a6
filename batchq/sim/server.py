"""The simulated Ollama server: its aiohttp application, scheduling and handlers (see
:mod:`batchq.sim.process`)."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from batchq.sim.config import SimConfig
from batchq.sim.replies import (
    count_tokens,
    expected_embedding,
    listed_model,
    loaded_model,
    reply_words,
    runs_away,
    shown_model,
    stamp,
)
from batchq.sim.scheduler import Scheduler, seconds
from batchq.sim.wire import (
    MIDSTREAM,
    ErrorReply,
    body_field,
    json_reply,
    keep_alive_field,
    read_body,
    reply_text,
    run_away,
    write_line,
)

__all__ = ["SimServer"]

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


_MAX_ARRIVALS = 100_000

# Ollama's error for an embedding input longer than the context, when truncate is false.
TOO_LONG_TO_EMBED = "the input length exceeds the context length"


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
    keep_alive: float | None  # seconds (inf: forever), None: the model's current one


_INFERENCE_PATHS = frozenset({"/api/generate", "/api/chat", "/api/embed"})


class SimServer:
    """A simulated Ollama; `await start()` it on a loop, or use `running_sim()` from sync code."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        self.sched = Scheduler(self.config)
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._url = ""
        self._clear_counters()

    def _clear_counters(self) -> None:
        self._requests = 0
        self._by_status: dict[str, int] = {}
        self._prompts: dict[str, int] = {}
        self._runaways = 0  # replies that never end (--fail-runaway)
        self._embeds = 0  # /api/embed requests received, however many inputs each
        self._answered = 0  # 200s to generate, chat and embed: not to /api/ps, /api/version
        # Arrival times (epoch s) of inference requests, for tests of global rate limits.
        self._arrivals: list[float] = []
        # The prompt of each arrival, by position: which batch a request came from, when a
        # test tags its prompts (the dispatch-fairness tests).
        self._arrival_prompts: list[str] = []
        self.sched.clear_peaks()

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
        self.sched.new_runtime()
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
        counts requests received per prompt text (each embed input counts once), ``embeds`` the
        /api/embed requests received, ``in_flight`` is requests admitted and not yet answered,
        whether waiting or generating; ``waiting`` the ones among them without a slot yet, and
        ``waited_seconds`` the request-seconds spent so waiting (its growth over an interval,
        divided by the interval, is the time-averaged number waiting).
        """
        return dict(self._on_loop(self._snapshot))

    def reset_stats(self) -> None:
        self._on_loop(self._clear_counters)

    def _snapshot(self) -> dict[str, Any]:
        return {
            "requests": self._requests,
            "by_status": dict(self._by_status),
            "max_concurrency": {m: s.peak for m, s in self.sched.states.items() if s.peak},
            "in_flight": self.sched.in_flight,
            "max_in_flight": self.sched.peak_in_flight,
            "waiting": self.sched.waiting,
            "waited_seconds": round(self.sched.waited_seconds(), 6),
            "loads": dict(self.sched.loads),
            "unloads": dict(self.sched.unloads),
            "prompts": dict(self._prompts),
            "runaways": self._runaways,
            "answered": self._answered,
            "embeds": self._embeds,
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
        except ErrorReply as e:
            status = e.status
            return json_reply({"error": e.message}, e.status)
        except web.HTTPException as e:
            status = e.status
            raise
        except ConnectionResetError:
            status = 499  # the client went away mid-stream; this reply is never delivered
            return web.Response(status=499)
        finally:
            self._requests += 1
            self._by_status[str(status)] = self._by_status.get(str(status), 0) + 1
            if status == 200 and request.path in _INFERENCE_PATHS:
                self._answered += 1

    # -- metadata endpoints --------------------------------------------------------------------

    async def _root(self, request: web.Request) -> web.Response:
        return web.Response(text="Ollama is running")

    async def _version(self, request: web.Request) -> web.Response:
        return json_reply({"version": "0.12.0"})

    async def _tags(self, request: web.Request) -> web.Response:
        return json_reply({"models": [listed_model(m) for m in self.config.models]})

    async def _ps(self, request: web.Request) -> web.Response:
        # Latest expiry first, as Ollama's PsHandler sorts; most recently used first among equals.
        sched = self.sched
        names = sorted(reversed(sched.loaded), key=sched.expires_at, reverse=True)
        models = [loaded_model(m, sched.expires_at(m), sched.sizes[m]) for m in names]
        return json_reply({"models": models})

    async def _show(self, request: web.Request) -> web.Response:
        body = await read_body(request, "ShowRequest")
        model = body_field(body, "model", str, "ShowRequest") or ""
        if not model:
            raise ErrorReply(400, "model is required")
        return json_reply(shown_model(self.sched.resolve(model)))

    async def _stats_handler(self, request: web.Request) -> web.Response:
        return json_reply(self._snapshot())

    async def _reset_handler(self, request: web.Request) -> web.Response:
        self._clear_counters()
        return json_reply({"status": "ok"})

    # -- inference -----------------------------------------------------------------------------

    async def _parse(self, request: web.Request, chat: bool) -> _Job:
        go_type = "ChatRequest" if chat else "GenerateRequest"
        body = await read_body(request, go_type)
        model = body_field(body, "model", str, go_type) or ""
        if chat:
            if not model:
                raise ErrorReply(400, "model is required")
            messages = body_field(body, "messages", list, go_type) or []
            if not all(isinstance(m, dict) for m in messages):
                raise ErrorReply(400, "json: cannot unmarshal into Go value of type api.Message")
            user = [m for m in messages if m.get("role") == "user"]
            prompt = str(user[-1].get("content") or "") if user else ""
            n_prompt = count_tokens(" ".join(str(m.get("content") or "") for m in messages))
            empty = not messages
        else:
            prompt = body_field(body, "prompt", str, go_type) or ""
            n_prompt, empty = count_tokens(prompt), not prompt
        name = self.sched.resolve(model)
        if "embed" in name:
            raise ErrorReply(400, f'"{model}" does not support {"chat" if chat else "generate"}')
        stream = body_field(body, "stream", bool, go_type) is not False  # Ollama streams by default
        options = body_field(body, "options", dict, go_type) or {}
        num_predict = options.get("num_predict", -1)
        if isinstance(num_predict, bool) or not isinstance(num_predict, int | float):
            raise ErrorReply(500, 'option "num_predict" must be of type integer')
        tokens, reason = self.config.response_tokens, "stop"
        if 0 <= num_predict < tokens:
            tokens, reason = int(num_predict), "length"
        keep_alive = keep_alive_field(body)
        return _Job(model, name, prompt, n_prompt, empty, stream, tokens, reason, keep_alive)

    async def _infer(self, request: web.Request, *, chat: bool) -> web.StreamResponse:
        start = time.perf_counter_ns()
        job = await self._parse(request, chat)
        self._prompts[job.prompt] = self._prompts.get(job.prompt, 0) + 1
        if len(self._arrivals) < _MAX_ARRIVALS:
            self._arrivals.append(time.time())
            self._arrival_prompts.append(job.prompt)
        if job.empty and job.keep_alive == 0:  # Ollama's way to unload a model: expireRunner
            self.sched.expire(job.name)
            head = {"model": job.model, "created_at": stamp(), "done": True}
            return json_reply(head | reply_text(chat, "") | {"done_reason": "unload"})
        midstream, slow = self.sched.admit(job.name)
        with self.sched.counted():
            async with self.sched.slot(job.name, job.keep_alive) as st:
                loaded = time.perf_counter_ns()
                head = {"model": job.model, "created_at": stamp()}
                if job.empty:  # Ollama answers an empty prompt by only loading the model
                    return json_reply(
                        head | reply_text(chat, "") | {"done": True, "done_reason": "load"}
                    )
                words = reply_words(self.config.seed, job.model, job.prompt, job.tokens)
                # Per-request speed shrinks as more slots share the GPU (see SimConfig docs).
                rate = self.sched.eval_rates[job.name]
                per_token = seconds(st.busy, rate * st.busy**0.78)
                if (stall := self.sched.stall(job.n_prompt, slow)) > 0:
                    await asyncio.sleep(stall)
                evaled = time.perf_counter_ns()
                if runs_away(job.prompt, self.config.fail_runaway, seed=self.config.seed):
                    self._runaways += 1
                    return await run_away(request, head, chat, job.stream)
                if midstream:
                    words = words[: max(1, len(words) // 2)]
                resp = None
                # Tokens of an infinitely fast model are all ready at once, so they leave in
                # one chunk with the final line: a write per token would make the simulator's
                # own CPU, not the queue under test, the limit on how soon slots refill.
                ready: list[dict[str, Any]] = []
                if not job.stream:
                    if per_token and words:
                        await asyncio.sleep(per_token * len(words))
                    if midstream:
                        raise ErrorReply(500, MIDSTREAM)
                else:
                    resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
                    t_eval = time.monotonic()
                    for i, word in enumerate(words):
                        piece = reply_text(chat, word if i == 0 else f" {word}")
                        line = {**head, "created_at": stamp(), **piece, "done": False}
                        if not per_token:
                            ready.append(line)
                            continue
                        due = t_eval + per_token * (i + 1)  # a deadline, so sleeps don't drift
                        await asyncio.sleep(max(0.0, due - time.monotonic()))
                        await write_line(request, resp, line)
                    if midstream:
                        await write_line(request, resp, *ready, {"error": MIDSTREAM})
                        await resp.write_eof()
                        return resp
                end = time.perf_counter_ns()
                final = head | reply_text(chat, "" if resp else " ".join(words))
                final |= {
                    "created_at": stamp(),
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
                    return json_reply(final)
                await write_line(request, resp, *ready, final)
                await resp.write_eof()
                return resp

    async def _embed(self, request: web.Request) -> web.Response:
        start = time.perf_counter_ns()
        body = await read_body(request, "EmbedRequest")
        model = body_field(body, "model", str, "EmbedRequest") or ""
        name = self.sched.resolve(model)
        texts = body.get("input") or []
        texts = [texts] if isinstance(texts, str) else texts
        self._embeds += 1
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise ErrorReply(400, "invalid input type")
        dim = self.config.embed_dim
        dimensions = body_field(body, "dimensions", int, "EmbedRequest")
        if dimensions:  # like Ollama: a shorter vector, normalised again; a longer one is ignored
            dim = min(dim, dimensions)
        for t in texts:
            self._prompts[t] = self._prompts.get(t, 0) + 1
        truncate = body_field(body, "truncate", bool, "EmbedRequest") is not False
        keep_alive = keep_alive_field(body)
        _, slow = self.sched.admit(name)
        n_prompt = sum(count_tokens(t) for t in texts)
        with self.sched.counted():
            async with self.sched.slot(name, keep_alive):
                loaded = time.perf_counter_ns()
                # EmbedHandler tokenizes once the model is loaded; one input too long without
                # truncate fails the whole request.
                limit = self.config.embed_context
                if not truncate and any(count_tokens(t) > limit for t in texts):
                    raise ErrorReply(400, TOO_LONG_TO_EMBED)
                # One pass for all the inputs: they share the overhead (see SimConfig).
                stall = self.sched.stall(n_prompt, slow) + max(self.config.embed_overhead, 0.0)
                if stall > 0:
                    await asyncio.sleep(stall)
                seed = self.config.seed
                vectors = [expected_embedding(model, t, seed=seed, dim=dim) for t in texts]
                return json_reply(
                    {
                        "model": model,
                        "embeddings": vectors,
                        "total_duration": time.perf_counter_ns() - start,
                        "load_duration": loaded - start,
                        "prompt_eval_count": n_prompt,
                    }
                )


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
