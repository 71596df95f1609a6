"""The Ollama simulator's side of Ollama's HTTP wire format: its error texts and statuses, the
Go decoder's complaints about a bad request body, and JSON and NDJSON replies."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from batchq.sim.config import parse_duration

__all__ = [
    "BUSY",
    "MIDSTREAM",
    "RUNNER_DIED",
    "ErrorReply",
    "body_field",
    "dumps",
    "json_reply",
    "keep_alive_field",
    "read_body",
    "reply_text",
    "run_away",
    "write_line",
]

BUSY = "server busy, please try again.  maximum pending requests exceeded"
RUNNER_DIED = "llama runner process has terminated: exit status 2"
MIDSTREAM = "an error was encountered while running the model: unexpected EOF"


class ErrorReply(Exception):
    """Raised by a handler to answer with Ollama's ``{"error": message}`` and this status.

    Not a :class:`batchq.errors.BatchqError`: it never leaves the server, whose middleware turns
    it into the reply."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def json_reply(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=dumps(data), content_type="application/json")


def reply_text(chat: bool, text: str) -> dict[str, Any]:
    return {"message": {"role": "assistant", "content": text}} if chat else {"response": text}


async def read_body(request: web.Request, go_type: str) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        raise ErrorReply(400, "missing request body")
    try:
        body = json.loads(raw)
    except ValueError as e:
        raise ErrorReply(400, f"invalid character in request body: {e}") from None
    if not isinstance(body, dict):
        kind = _KINDS.get(type(body), "value")
        raise ErrorReply(400, f"json: cannot unmarshal {kind} into Go value of type api.{go_type}")
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


def body_field(body: dict[str, Any], key: str, kind: type, go_type: str) -> Any:
    value = body.get(key)
    # bool is an int subclass in Python but not in Go's decoder, so check it both ways.
    if value is None or (isinstance(value, kind) and isinstance(value, bool) == (kind is bool)):
        return value
    got, want = _KINDS.get(type(value), "object"), _GO_TYPES[kind]
    raise ErrorReply(
        400, f"json: cannot unmarshal {got} into Go struct field {go_type}.{key} of type {want}"
    )


def keep_alive_field(body: dict[str, Any]) -> float | None:
    """The request's ``keep_alive`` in seconds (inf: forever), None when it gives none."""
    value = body.get("keep_alive")
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as e:
        raise ErrorReply(400, str(e)) from None


async def write_line(request: web.Request, resp: web.StreamResponse, *objs: Any) -> None:
    """Write each object as one NDJSON line, all of them in one chunk."""
    # Headers go out with the first chunk, so errors before it keep their real status.
    if not resp.prepared:
        await resp.prepare(request)
    await resp.write("".join(dumps(obj) + "\n" for obj in objs).encode())


# A looping model's reply: this much text per line, as fast as the client reads it.
_RUNAWAY_LINE = " and so on" * 100


async def run_away(
    request: web.Request, head: dict[str, Any], chat: bool, stream: bool
) -> web.StreamResponse:
    """A reply that never ends, as from a model stuck in a loop with ``num_predict`` unset: a
    stream of text lines without ``done: true``, or, not streaming, a body that never comes.
    It ends when the client hangs up."""
    resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await resp.prepare(request)
    line = (dumps({**head, **reply_text(chat, _RUNAWAY_LINE), "done": False}) + "\n").encode()
    while True:
        if stream:
            await resp.write(line)
            await asyncio.sleep(0)  # the other requests' turn: this one never waits on the GPU
        else:
            await asyncio.sleep(3600)
