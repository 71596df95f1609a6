"""OpenAI's Files and Batches API of ``batchq serve``, through the official ``openai`` client,
against a live ``serve`` process, real workers and the simulator."""

from __future__ import annotations

import asyncio
import functools
import json
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI
from openai.types import Batch

from batchq.store.batches import BatchStore
from batchq.store.connection import connect
from batchq.store.deadlines import expire_due
from batchq.store.keys import Keys
from tests.conftest import free_port
from tests.openai_lines import parse_line
from tests.procs import Workers, batchq, env_for, simulator, status, wait_for
from tests.waits import wait_for_value, wait_until

pytestmark = pytest.mark.e2e

KEY = "sk-batchq-" + secrets.token_hex(8)


@dataclass(frozen=True)
class Served:
    url: str
    env: dict[str, str]
    home: Path


@pytest.fixture(scope="module")
def sim_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    args = ["--eval-tokens-per-s", "0", "--prompt-tokens-per-s", "0"]
    with simulator(tmp_path_factory.mktemp("sim"), *args) as url:
        yield url


@pytest.fixture(scope="module")
def served(
    valkey_url: str, sim_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("home")
    env = env_for(valkey_url, "t" + secrets.token_hex(4), home, sim_url, BATCHQ_API_KEYS=KEY)
    port = free_port()
    cmd = [sys.executable, "-m", "batchq", "serve", "--port", str(port)]
    server = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:

        def answers() -> bool:
            assert server.poll() is None, "the server exited"
            return httpx.get(url + "/api/status", timeout=5).is_success

        wait_until(answers, interval=0.1, what="batchq serve", ignore=(httpx.HTTPError,))
        yield Served(url, env, home)
    finally:
        server.terminate()
        _, err = server.communicate(timeout=30)
    assert server.returncode == 0, err


@pytest.fixture
def client(served: Served) -> Iterator[OpenAI]:
    with OpenAI(base_url=f"{served.url}/v1", api_key=KEY, max_retries=0, timeout=60) as c:
        yield c


def chat_lines(n: int, tag: str = "req") -> bytes:
    lines = [
        {
            "custom_id": f"{tag}-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": "llama3.2",
                "messages": [{"role": "user", "content": f"question {i}"}],
                "max_tokens": 20,
            },
        }
        for i in range(n)
    ]
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def finished(client: OpenAI, batch_id: str, want: str, timeout: float = 120) -> Batch:
    return wait_for_value(
        lambda: client.batches.retrieve(batch_id),
        lambda b: b.status == want,
        timeout=timeout,
        interval=0.1,
        what=f"{batch_id} {want}",
    )


def test_files_upload_list_retrieve_download_delete(client: OpenAI, served: Served) -> None:
    data = chat_lines(50)
    created = client.files.create(file=("questions.jsonl", data), purpose="batch")
    assert created.id.startswith("file-") and created.object == "file"
    assert (created.bytes, created.filename, created.purpose) == (
        len(data),
        "questions.jsonl",
        "batch",
    )
    assert created.created_at > 1_700_000_000  # seconds, not ms
    assert (served.home / "files" / created.id).read_bytes() == data
    assert client.files.retrieve(created.id) == created
    assert created.id in [f.id for f in client.files.list()]
    assert client.files.list(purpose="batch_output").data == [] or all(
        f.purpose == "batch_output" for f in client.files.list(purpose="batch_output")
    )
    assert client.files.content(created.id).read() == data
    deleted = client.files.delete(created.id)
    assert (deleted.id, deleted.deleted) == (created.id, True)
    assert not (served.home / "files" / created.id).exists()
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(created.id)


def test_files_refuse_another_purpose_and_list_in_pages(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="purpose"):
        client.files.create(file=("x.jsonl", b"{}\n"), purpose="fine-tune")
    ids = [client.files.create(file=(f"{i}.jsonl", b"{}\n"), purpose="batch").id for i in range(3)]
    first = client.files.list(limit=2, order="asc", extra_query={})
    assert len(first.data) == 2 and first.has_more
    every = [f.id for f in client.files.list(limit=2, order="desc")]  # follows the pages
    assert [i for i in every if i in ids] == ids[::-1]


def test_batch_runs_to_completion(client: OpenAI, served: Served, tmp_path: Path) -> None:
    n = 30
    upload = client.files.create(file=("batchinput.jsonl", chat_lines(n)), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"team": "nlp"},
    )
    assert batch.status == "in_progress" and batch.id.startswith("batch_")
    assert batch.request_counts is not None and batch.request_counts.total == n
    assert batch.metadata == {"team": "nlp"} and batch.input_file_id == upload.id
    assert batch.expires_at is not None and batch.expires_at - batch.created_at == 24 * 3600
    native = (batch.model_extra or {})["batchq_batch_id"]
    with Workers(served.env, tmp_path) as workers:
        workers.start("--concurrency", "8")
        done = finished(client, batch.id, "completed")
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (n, 0)
    assert done.output_file_id and done.error_file_id is None
    assert done.in_progress_at and done.finalizing_at and done.completed_at
    assert done.usage is not None and done.usage.output_tokens > 0
    out = client.files.retrieve(done.output_file_id)
    assert out.purpose == "batch_output"
    text = client.files.content(done.output_file_id).text
    assert out.bytes == len(text.encode())
    lines = text.splitlines()
    assert [json.loads(line)["custom_id"] for line in lines] == [f"req-{i}" for i in range(n)]
    for line in lines:
        parsed, body = parse_line(line)
        assert body is not None and parsed.response is not None
    page = httpx.get(f"{served.url}/api/status", timeout=5).json()
    assert native in [b["batch_id"] for b in page["batches"]]
    # An ordinary batchq batch: the CLI sees it.
    s = status(served.env, native)
    assert (s["state"], s["succeeded"], s["name"], s["metadata"]) == (
        "completed",
        n,
        "batchinput.jsonl",
        {"team": "nlp"},
    )


def _batches_of(env: dict[str, str]) -> int:
    return len(json.loads(batchq(env, "list", "--json", "--limit", "1000").stdout))


@pytest.mark.parametrize(
    ("bad", "line", "param"),
    [
        ({"custom_id": "x", "method": "POST", "url": "/v1/chat/completions"}, 3, "body"),
        (
            {"custom_id": "x", "url": "/v1/completions", "body": {"model": "m", "prompt": "p"}},
            3,
            "url",
        ),
        ("not json", 3, None),
    ],
)
def test_an_invalid_input_file_fails_naming_its_line(
    client: OpenAI, served: Served, bad: Any, line: int, param: str | None
) -> None:
    good = chat_lines(2).decode()
    raw = bad if isinstance(bad, str) else json.dumps(bad)
    data = f"{good}{raw}\n{good.replace('req-', 'later-')}".encode()
    before = _batches_of(served.env)
    upload = client.files.create(file=("bad.jsonl", data), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    assert batch.status == "failed" and batch.failed_at
    assert batch.errors is not None and batch.errors.data
    [error] = batch.errors.data
    assert (error.line, error.param) == (line, param) and error.message
    assert client.batches.retrieve(batch.id).status == "failed"
    assert _batches_of(served.env) == before  # nothing queued


def test_cancel_gives_cancelled_lines(client: OpenAI) -> None:
    upload = client.files.create(file=("c.jsonl", chat_lines(5, "c")), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id,
        endpoint="/v1/chat/completions",
        completion_window="90m",  # type: ignore[arg-type]  # batchq takes any duration
    )
    assert batch.expires_at is not None and batch.expires_at - batch.created_at == 90 * 60
    assert batch.metadata is None
    cancelling = client.batches.cancel(batch.id)  # no worker runs: nothing in flight
    assert cancelling.status in ("cancelling", "cancelled") and cancelling.cancelling_at
    done = finished(client, batch.id, "cancelled")
    assert done.cancelled_at and done.output_file_id is None and done.error_file_id
    lines = [json.loads(x) for x in client.files.content(done.error_file_id).text.splitlines()]
    assert [x["custom_id"] for x in lines] == [f"c-{i}" for i in range(5)]
    assert {x["error"]["code"] for x in lines} == {"batch_cancelled"}
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(_failed_batch(client))


def test_past_its_window_a_batch_expires_then_runs_again(
    client: OpenAI, served: Served, tmp_path: Path
) -> None:
    upload = client.files.create(file=("e.jsonl", chat_lines(4, "e")), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id,
        endpoint="/v1/chat/completions",
        completion_window="1s",  # type: ignore[arg-type]  # batchq takes any duration
    )
    assert batch.expires_at is not None
    native = (batch.model_extra or {})["batchq_batch_id"]

    async def expire() -> list[str]:
        redis = connect(served.env["BATCHQ_REDIS_URL"])
        try:
            # What a worker's housekeeping does on its heartbeat; no worker runs here, so
            # none of the items starts first.
            return await expire_due(BatchStore(redis, Keys(served.env["BATCHQ_PREFIX"])))
        finally:
            await redis.aclose()

    wait_until(lambda: native in asyncio.run(expire()), what="the deadline acted on")
    done = finished(client, batch.id, "expired")
    assert done.expired_at and done.output_file_id is None and done.error_file_id
    assert done.request_counts is not None and done.request_counts.failed == 4
    lines = [json.loads(x) for x in client.files.content(done.error_file_id).text.splitlines()]
    assert [x["custom_id"] for x in lines] == [f"e-{i}" for i in range(4)]
    assert {x["error"]["code"] for x in lines} == {"batch_expired"}
    assert {x["response"] for x in lines} == {None}
    # Run again with batchq (an ordinary batch), it finishes again with files of its own.
    batchq(served.env, "retry", native, "--expired")
    assert client.batches.retrieve(batch.id).status == "in_progress"
    with Workers(served.env, tmp_path) as workers:
        workers.start()
        again = finished(client, batch.id, "completed")
    assert again.output_file_id and again.error_file_id is None
    text = client.files.content(again.output_file_id).text
    assert [json.loads(x)["custom_id"] for x in text.splitlines()] == [f"e-{i}" for i in range(4)]


def test_cancel_waits_for_the_requests_in_flight(
    client: OpenAI, served: Served, tmp_path: Path
) -> None:
    upload = client.files.create(file=("slow.jsonl", chat_lines(20, "s")), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    native = (batch.model_extra or {})["batchq_batch_id"]
    with (
        simulator(tmp_path, "--latency", "3", "--eval-tokens-per-s", "0") as slow,
        Workers(served.env, tmp_path) as workers,
    ):
        workers.start("--concurrency", "2", env=served.env | {"OLLAMA_HOST": slow})
        wait_for(served.env, native, lambda s: s["running"] >= 1)
        cancelling = client.batches.cancel(batch.id)
        assert cancelling.status == "cancelling"  # two requests are still at Ollama
        assert client.batches.retrieve(batch.id).status == "cancelling"
        done = finished(client, batch.id, "cancelled")
    assert done.request_counts is not None and done.cancelled_at and done.error_file_id
    ran = done.request_counts.completed
    lines = [json.loads(x) for x in client.files.content(done.error_file_id).text.splitlines()]
    assert len(lines) == 20 - ran and {x["error"]["code"] for x in lines} == {"batch_cancelled"}


def _failed_batch(client: OpenAI) -> str:
    upload = client.files.create(file=("f.jsonl", b"[]\n"), purpose="batch")
    return client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    ).id


def test_batches_list_in_pages(client: OpenAI) -> None:
    ids = [_failed_batch(client) for _ in range(3)]
    first = client.batches.list(limit=2)
    assert [b.id for b in first.data] == ids[:0:-1] and first.has_more
    every = [b.id for b in client.batches.list(limit=2)]  # follows the pages
    assert [i for i in every if i in ids] == ids[::-1]
    assert len(every) == len(set(every))


def test_batch_requests_are_checked(client: OpenAI) -> None:
    upload = client.files.create(file=("ok.jsonl", chat_lines(1)), purpose="batch")
    cases: list[dict[str, Any]] = [
        {"endpoint": "/v1/moderations", "param": "endpoint"},
        {"completion_window": "soon", "param": "completion_window"},
        {"metadata": {str(i): "v" for i in range(17)}, "param": "metadata"},
    ]
    for case in cases:
        param = case.pop("param")
        args: dict[str, Any] = {
            "input_file_id": upload.id,
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        } | case
        with pytest.raises(openai.BadRequestError) as err:
            client.batches.create(**args)
        assert err.value.param == param


def test_unknown_ids_are_404(client: OpenAI, served: Served) -> None:
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve("file-" + "0" * 24)
    with pytest.raises(openai.NotFoundError):
        client.files.content("file-nope")
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_" + "0" * 24)
    with pytest.raises(openai.NotFoundError):
        client.batches.create(
            input_file_id="file-" + "1" * 24,
            endpoint="/v1/chat/completions",
            completion_window="24h",
        )
    with pytest.raises(openai.NotFoundError):
        client.get("/responses", cast_to=object)  # not served yet
    auth = {"Authorization": f"Bearer {KEY}"}
    for path in ("/v1/responses", "/v1/messages/batches", "/v1/files/x/y"):
        reply = httpx.get(served.url + path, headers=auth, timeout=5)
        assert reply.status_code == 404
        assert set(reply.json()["error"]) == {"message", "type", "param", "code"}


def test_a_wrong_key_is_401_and_the_page_needs_none(served: Served) -> None:
    wrong = OpenAI(base_url=f"{served.url}/v1", api_key="sk-wrong", max_retries=0)
    with wrong, pytest.raises(openai.AuthenticationError) as err:
        wrong.files.list()
    assert err.value.code == "invalid_api_key"
    bare = httpx.get(f"{served.url}/v1/batches", timeout=5)
    assert bare.status_code == 401
    assert set(bare.json()["error"]) == {"message", "type", "param", "code"}
    assert httpx.get(f"{served.url}/api/status", timeout=5).is_success


def test_serve_refuses_the_network_without_a_key(tmp_path: Path, valkey_url: str) -> None:
    env = env_for(valkey_url, "t" + secrets.token_hex(4), tmp_path, "http://127.0.0.1:9")
    port = str(free_port())
    proc = batchq(env, "serve", "--host", "0.0.0.0", "--port", port, check=False)
    assert proc.returncode != 0 and "--no-auth" in proc.stderr


README = Path(__file__).parents[2] / "README.md"


def readme_example() -> str:
    section = README.read_text().split("\n## OpenAI's Batch API, served by batchq\n", 1)[1]
    [example] = re.findall(r"```python\n(.*?)```", section.split("\n## ", 1)[0], re.DOTALL)
    return str(example)


def test_readme_example_is_openais_and_runs(
    client: OpenAI, served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    example = readme_example()
    assert 'base_url="http://127.0.0.1:8470/v1", api_key="my-batchq-key"' in example
    (tmp_path / "batchinput.jsonl").write_bytes(chat_lines(4))
    monkeypatch.chdir(tmp_path)
    # OpenAI's example names its batch and output file by placeholder ids; these stand for
    # the ones the run makes, the output file's once the batch is done.
    namespace: dict[str, Any] = {}

    def output_file_id() -> str:
        created = client.batches.list(limit=1).data[0]
        with Workers(served.env, tmp_path) as workers:
            workers.start()
            done = finished(client, created.id, "completed")
        assert done.output_file_id
        return done.output_file_id

    opened: list[Any] = []

    def tracked_open(*args: Any) -> Any:
        # The example leaves its file open, for the interpreter's exit to close.
        opened.append(open(*args))  # noqa: SIM115 - closed below
        return opened[-1]

    namespace["output_file_id"] = output_file_id
    namespace["open"] = tracked_open
    code = (
        example.replace("http://127.0.0.1:8470", served.url)
        .replace("my-batchq-key", KEY)
        .replace('"batch_abc123"', "client.batches.list(limit=1).data[0].id")
        .replace('"file-xyz123"', "output_file_id()")
    )
    try:
        exec(compile(code, "README example", "exec"), namespace)
    finally:
        for f in opened:
            f.close()
    text = namespace["file_response"].text
    assert [json.loads(x)["custom_id"] for x in text.splitlines()] == [f"req-{i}" for i in range(4)]
    assert namespace["batch"].metadata == {"description": "nightly eval job"}


def test_an_upload_may_name_its_purpose_after_the_file(served: Served) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    data = chat_lines(3)
    body, boundary = b"", "b0undary"
    for name, extra, value in (
        ("file", '; filename="../../etc/late.jsonl"', data),
        ("purpose", "", b"batch"),
    ):
        body += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"{extra}\r\n\r\n'.encode()
        )
        body += value + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    headers = auth | {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    reply = httpx.post(f"{served.url}/v1/files", content=body, headers=headers, timeout=10)
    assert reply.status_code == 200, reply.text
    made = reply.json()
    assert (made["filename"], made["bytes"], made["purpose"]) == ("late.jsonl", len(data), "batch")
    assert (served.home / "files" / made["id"]).read_bytes() == data
    not_form = httpx.post(f"{served.url}/v1/files", json={}, headers=auth, timeout=10)
    assert not_form.status_code == 400 and not_form.json()["error"]["message"]
    garbled = httpx.post(
        f"{served.url}/v1/files", content=b"no boundary here", headers=headers, timeout=10
    )
    assert garbled.status_code == 400 and garbled.json()["error"]["message"]
    assert sorted(p.name for p in (served.home / "files").iterdir() if p.name.startswith(".")) == []


def _answers(server: subprocess.Popen[str], url: str, headers: dict[str, str]) -> bool:
    assert server.poll() is None, "the server exited"
    return httpx.get(url, headers=headers, timeout=5).status_code == 200


def test_serve_beyond_loopback_with_keys_or_no_auth(tmp_path: Path, valkey_url: str) -> None:
    env = env_for(valkey_url, "t" + secrets.token_hex(4), tmp_path, "http://127.0.0.1:9")
    for args, extra, key in (
        (["--api-key", "sk-flag"], {"BATCHQ_API_KEYS": "sk-env"}, "sk-flag"),
        (["--api-key", "sk-flag"], {"BATCHQ_API_KEYS": "sk-env"}, "sk-env"),
        (["--no-auth"], {}, None),
    ):
        port = free_port()
        cmd = [sys.executable, "-m", "batchq", "serve", "--host", "0.0.0.0", "--port", str(port)]
        server = subprocess.Popen([*cmd, *args], env=env | extra, stderr=subprocess.PIPE, text=True)
        url = f"http://127.0.0.1:{port}/v1/files"
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        try:
            answers = functools.partial(_answers, server, url, headers)
            wait_until(answers, interval=0.1, what="serve", ignore=(httpx.HTTPError,))
            if key:
                assert httpx.get(url, timeout=5).status_code == 401
        finally:
            server.terminate()
            server.communicate(timeout=30)
