"""Parse OpenAI batch output lines with the ``openai`` package's own types, as an oracle.

The ``openai`` package has no type for a batch output line itself, so :class:`OutputLine`
spells out the documented shape (``id``, ``custom_id``, ``response``, ``error``) strictly; the
bodies and the error are the package's types. Its models accept unknown keys, so every parsed
model is also checked for keys the type does not know.
"""

from __future__ import annotations

import json
from typing import Any

from openai import BaseModel as OpenAIModel
from openai.types import BatchError, Completion, CreateEmbeddingResponse
from openai.types.chat import ChatCompletion
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Body", "OutputLine", "assert_known_keys", "parse_line"]

Body = ChatCompletion | Completion | CreateEmbeddingResponse


class Response(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    status_code: int
    request_id: str = Field(pattern=r"^req_")
    body: dict[str, Any]


class OutputLine(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, arbitrary_types_allowed=True)

    id: str = Field(pattern=r"^batch_req_")
    custom_id: str
    response: Response | None
    error: BatchError | None


def assert_known_keys(model: OpenAIModel) -> None:
    assert not model.model_extra, f"{type(model).__name__} has unknown keys {model.model_extra}"
    for name in type(model).model_fields:
        value = getattr(model, name)
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, OpenAIModel):
                assert_known_keys(v)


def parse_line(text: str) -> tuple[OutputLine, Body | None]:
    """The line, and the body of a successful response parsed as the type its ``object``
    names; raises if anything does not fit."""
    raw = json.loads(text)
    error = raw.get("error")
    line = OutputLine.model_validate(
        raw | {"error": BatchError.model_validate(error) if error is not None else None}
    )
    if line.error is not None:
        assert_known_keys(line.error)
        assert line.error.code and line.error.message
    if line.response is None or line.response.status_code != 200:
        assert line.error is not None, "a line without a 200 response must say why"
        if line.response is not None:
            err = line.response.body["error"]
            assert set(err) == {"message", "type", "param", "code"}
        return line, None
    assert line.error is None
    kinds: dict[str, type[Body]] = {
        "chat.completion": ChatCompletion,
        "text_completion": Completion,
        "list": CreateEmbeddingResponse,
    }
    body = kinds[line.response.body["object"]].model_validate(line.response.body)
    assert_known_keys(body)
    return line, body
