"""OpenAI batch output lines: each shape checked with the ``openai`` package's own types, and a
whole batch through real worker processes and the simulator."""

from __future__ import annotations

import json
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openai.types import Completion, CreateEmbeddingResponse
from openai.types.chat import ChatCompletion

from batchq.records import Endpoint, Item, ItemError, ItemResult, ItemStatus
from batchq.results.openai import CANCELLED_MESSAGE, OpenAILines
from batchq.sim.process import expected_embedding, expected_response
from tests.openai_lines import parse_line
from tests.procs import Workers, batchq, env_for, simulator, wait_done

METRICS = {
    "total_duration": 900,
    "load_duration": 10,
    "prompt_eval_count": 26,
    "prompt_eval_duration": 300,
    "eval_count": 290,
    "eval_duration": 500,
    "done_reason": "stop",
}
CHAT = Item("c1", Endpoint.CHAT, {"model": "llama3.2", "messages": []})
GEN = Item("g1", Endpoint.GENERATE, {"model": "qwen3:8b", "prompt": "p"})


def ok(index: int, item: Item, text: str, **metrics: Any) -> ItemResult:
    return ItemResult(
        index=index,
        custom_id=item.custom_id,
        status=ItemStatus.SUCCEEDED,
        response=text,
        attempts=1,
        model=item.model,
        metrics=METRICS | metrics,
    )


def test_chat_item_is_a_chat_completion() -> None:
    lines = OpenAILines("b_00112233445566aa", created=1_700_000_000)
    line, body = parse_line(lines.line(ok(3, CHAT, "The sky is blue."), CHAT))
    assert isinstance(body, ChatCompletion)
    assert (line.id, line.custom_id, line.error) == ("batch_req_00112233445566aa_3", "c1", None)
    assert line.response and line.response.status_code == 200
    assert (body.model, body.created, body.object) == ("llama3.2", 1_700_000_000, "chat.completion")
    (choice,) = body.choices
    assert choice.message.role == "assistant" and choice.message.content == "The sky is blue."
    assert choice.finish_reason == "stop"
    assert body.usage and (body.usage.prompt_tokens, body.usage.completion_tokens) == (26, 290)
    assert body.usage.total_tokens == 316


def test_generate_item_is_a_text_completion_cut_at_length() -> None:
    lines = OpenAILines("b_00112233445566aa", created=5)
    _, body = parse_line(lines.line(ok(0, GEN, "Once", done_reason="length"), GEN))
    assert isinstance(body, Completion)
    assert body.object == "text_completion" and body.model == "qwen3:8b"
    (choice,) = body.choices
    assert (choice.text, choice.finish_reason, choice.index) == ("Once", "length", 0)


def test_a_cached_prompt_counts_zero_prompt_tokens() -> None:
    # Ollama leaves prompt_eval_count out when the whole prompt came from its cache.
    result = ok(0, CHAT, "x")
    assert result.metrics
    del result.metrics["prompt_eval_count"]
    _, body = parse_line(OpenAILines("b_00112233445566aa", 0).line(result, CHAT))
    assert body and body.usage
    assert (body.usage.prompt_tokens, body.usage.total_tokens) == (0, 290)


def failed(error: ItemError) -> ItemResult:
    return ItemResult(
        index=7, custom_id="bad", status=ItemStatus.FAILED, error=error, attempts=1, model="m"
    )


@pytest.mark.parametrize(
    ("status", "kind"),
    [(404, "not_found_error"), (400, "invalid_request_error"), (503, "api_error")],
)
def test_http_failure_keeps_its_status_and_says_why(status: int, kind: str) -> None:
    error = ItemError(type="model_not_found", message="model 'm' not found", status_code=status)
    line, body = parse_line(OpenAILines("b_00112233445566aa", 0).line(failed(error), CHAT))
    assert body is None and line.response and line.error
    assert line.response.status_code == status
    assert line.response.body["error"] == {
        "message": "model 'm' not found",
        "type": kind,
        "param": None,
        "code": "model_not_found",
    }
    assert (line.error.code, line.error.message) == ("model_not_found", "model 'm' not found")


def test_failure_without_http_status_has_no_response() -> None:
    for status_code in (None, 200):  # 200: an error line inside a stream
        error = ItemError(type="timeout", message="no reply", status_code=status_code)
        line, _ = parse_line(OpenAILines("b_00112233445566aa", 0).line(failed(error), GEN))
        assert line.response is None and line.error
        assert (line.error.code, line.error.message) == ("timeout", "no reply")


def test_cancelled_item_is_reported_as_openai_does() -> None:
    result = ItemResult(index=2, custom_id="late", status=ItemStatus.CANCELLED)
    line, _ = parse_line(OpenAILines("b_00112233445566aa", 0).line(result, None))
    assert line.response is None and line.error
    assert (line.error.code, line.error.message) == ("batch_cancelled", CANCELLED_MESSAGE)


def test_embed_item_is_a_create_embedding_response() -> None:
    item = Item("v", Endpoint.EMBED, {"model": "nomic-embed-text", "input": ["a", "b"]})
    vectors = [[0.25, -0.5], [1e-7, 1.0]]
    result = ItemResult(
        index=1,
        custom_id="v",
        status=ItemStatus.SUCCEEDED,
        model="nomic-embed-text",
        metrics={"prompt_eval_count": 3, "total_duration": 5},
        embeddings=[array("f", v).tolist() for v in vectors],
    )
    text = OpenAILines("b_00112233445566aa", 0).line(result, item)
    line, body = parse_line(text)
    assert isinstance(body, CreateEmbeddingResponse) and line.error is None
    assert (body.object, body.model) == ("list", "nomic-embed-text")
    assert [(d.object, d.index) for d in body.data] == [("embedding", 0), ("embedding", 1)]
    assert [array("f", d.embedding).tolist() for d in body.data] == result.embeddings
    assert (body.usage.prompt_tokens, body.usage.total_tokens) == (3, 3)
    assert '"embedding":[1.00000001e-07,1]' in text  # float32 digits, not float64's


# -- end to end ------------------------------------------------------------------------------

SEED = 5
EMBEDDER, EMBED_DIM = "nomic-embed-text", 32


@pytest.fixture(scope="module")
def sim_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    args = ["--seed", str(SEED), "--parallel", "8", "--embed-dim", str(EMBED_DIM)]
    args += ["--eval-tokens-per-s", "0", "--prompt-tokens-per-s", "0"]
    with simulator(tmp_path_factory.mktemp("sim"), *args) as url:
        yield url


def openai_line(custom_id: str, url: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def mixed_input(path: Path) -> list[dict[str, Any]]:
    """Every kind of line, some of them failing; returns what each output line must hold."""
    chat, cmpl = "/v1/chat/completions", "/v1/completions"
    lines: list[tuple[Any, dict[str, Any]]] = []
    for i in range(4):
        user = [{"role": "user", "content": f"question {i}"}]
        cmpl_body = {"model": "qwen3:8b", "prompt": f"c {i}", "max_tokens": 3}
        lines += [
            (f"plain {i}", {"prompt": f"plain {i}", "object": "text_completion"}),
            (
                openai_line(f"chat-{i}", chat, {"model": "qwen3:8b", "messages": user}),
                {"model": "qwen3:8b", "prompt": f"question {i}", "object": "chat.completion"},
            ),
            (
                openai_line(f"cmpl-{i}", cmpl, cmpl_body),
                {"model": "qwen3:8b", "prompt": f"c {i}", "object": "text_completion", "n": 3},
            ),
            (
                {"custom_id": f"native-chat-{i}", "messages": user},
                {"prompt": f"question {i}", "object": "chat.completion"},
            ),
            (
                openai_line(f"lost-{i}", chat, {"model": "no-such-model", "messages": user}),
                {"model": "no-such-model", "fail": 404},
            ),
            (
                openai_line(
                    f"emb-{i}", "/v1/embeddings", {"model": EMBEDDER, "input": [f"e{i}", "f"]}
                ),
                {"model": EMBEDDER, "object": "list", "texts": [f"e{i}", "f"]},
            ),
            (
                {"input": f"short {i}", "model": EMBEDDER, "dimensions": 4},
                {"model": EMBEDDER, "object": "list", "texts": [f"short {i}"], "dim": 4},
            ),
        ]
    lines.append(
        ({"input": "x", "model": "no-such-embedder"}, {"model": "no-such-embedder", "fail": 404})
    )
    expect = []
    with path.open("w") as f:
        for index, (line, want) in enumerate(lines):
            f.write(json.dumps(line) + "\n")
            cid = line.get("custom_id", str(index)) if isinstance(line, dict) else str(index)
            expect.append({"cid": cid, "model": "llama3.2"} | want)
    return expect


def check_line(text: str, want: dict[str, Any]) -> None:
    line, body = parse_line(text)
    assert line.custom_id == want["cid"]
    if "fail" in want:
        assert body is None and line.response and line.error
        assert line.response.status_code == want["fail"]
        assert line.error.message == f"model '{want['model']}' not found"
        return
    assert body is not None and body.object == want["object"] and body.model == want["model"]
    if isinstance(body, CreateEmbeddingResponse):
        assert [d.index for d in body.data] == list(range(len(want["texts"])))
        for d, text in zip(body.data, want["texts"], strict=True):
            vector = expected_embedding(EMBEDDER, text, seed=SEED, dim=want.get("dim", EMBED_DIM))
            assert array("f", d.embedding).tolist() == vector
        tokens = sum(len(t.split()) for t in want["texts"])  # the simulator's token count
        assert body.usage.prompt_tokens == tokens == body.usage.total_tokens
        return
    tokens = want.get("n", 8)
    text_out = expected_response(want["model"], want["prompt"], seed=SEED, tokens=tokens)
    if isinstance(body, ChatCompletion):
        assert body.choices[0].message.content == text_out
    else:
        assert isinstance(body, Completion) and body.choices[0].text == text_out
    assert body.choices[0].finish_reason == ("length" if "n" in want else "stop")
    assert body.usage and body.usage.completion_tokens == tokens and body.usage.prompt_tokens > 0


@pytest.mark.e2e
def test_results_as_openai_batch_output_and_error_files(
    redis_url: str, prefix: str, tmp_path: Path, sim_url: str
) -> None:
    env = env_for(redis_url, prefix, tmp_path / "home", sim_url)
    src = tmp_path / "in.jsonl"
    expect = mixed_input(src)
    bid = batchq(env, "submit", str(src), "--model", "llama3.2").stdout.strip()
    with Workers(env, tmp_path) as workers:
        workers.start("--concurrency", "4")
        status = wait_done(env, bid)
    assert (status["succeeded"], status["failed"]) == (24, 5)

    everything = tmp_path / "all.jsonl"
    batchq(env, "results", bid, "--format", "openai", "-o", str(everything))
    lines = everything.read_text().splitlines()
    assert len(lines) == len(expect)
    for text, want in zip(lines, expect, strict=True):
        check_line(text, want)
    assert len({json.loads(t)["id"] for t in lines}) == len(lines)

    out, err = tmp_path / "ok.jsonl", tmp_path / "errors.jsonl"
    proc = batchq(env, "results", bid, "--format", "openai", "-o", str(out), "--errors", str(err))
    assert "24 results" in proc.stderr and "5 failed" in proc.stderr
    good = [w for w in expect if "fail" not in w]
    bad = [w for w in expect if "fail" in w]
    assert [json.loads(t)["custom_id"] for t in out.read_text().splitlines()] == [
        w["cid"] for w in good
    ]
    assert [json.loads(t)["custom_id"] for t in err.read_text().splitlines()] == [
        w["cid"] for w in bad
    ]
    assert sorted(out.read_text().splitlines() + err.read_text().splitlines()) == sorted(lines)

    # The native format is unchanged, and splits the same way.
    native = tmp_path / "native.jsonl"
    batchq(env, "results", bid, "-o", str(native), "--errors", str(tmp_path / "native-err.jsonl"))
    rows = [json.loads(t) for t in native.read_text().splitlines()]
    assert [r["custom_id"] for r in rows] == [w["cid"] for w in good]
    assert {r["status"] for r in rows} == {"succeeded"} and "index" in rows[0]
    for r, want in zip(rows, good, strict=True):
        if "texts" not in want:
            assert "embeddings" not in r and r["response"]
            continue
        dim = want.get("dim", EMBED_DIM)
        assert r["response"] is None
        assert [array("f", v).tolist() for v in r["embeddings"]] == [
            expected_embedding(EMBEDDER, t, seed=SEED, dim=dim) for t in want["texts"]
        ]

    # A batch cancelled before it ran: every item is in the error file, as batch_cancelled.
    never = batchq(env, "submit", str(src), "--model", "llama3.2").stdout.strip()
    batchq(env, "cancel", never)
    batchq(env, "results", never, "--format", "openai", "-o", str(out), "--errors", str(err))
    assert out.read_text() == ""
    errors = [parse_line(t)[0] for t in err.read_text().splitlines()]
    assert [e.custom_id for e in errors] == [w["cid"] for w in expect]
    assert {(e.error.code if e.error else None) for e in errors} == {"batch_cancelled"}
