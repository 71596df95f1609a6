"""``batchq serve``'s ``/v1`` app: API keys, exposure beyond loopback, OpenAI's error shape for
unknown ids and routes, and the README's example run as written."""

from __future__ import annotations

import functools
import json
import re
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from tests.api.live import KEY, Served, chat_lines, finished
from tests.conftest import free_port
from tests.procs import Workers, batchq, env_for
from tests.waits import wait_until

pytestmark = pytest.mark.e2e


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
    for path in ("/v1/responses", "/v1/files/x/y"):
        reply = httpx.get(served.url + path, headers=auth, timeout=5)
        assert reply.status_code == 404
        assert set(reply.json()["error"]) == {"message", "type", "param", "code"}
    # Anthropic's routes answer in Anthropic's shape.
    reply = httpx.get(served.url + "/v1/messages/nope", headers={"x-api-key": KEY}, timeout=5)
    assert reply.status_code == 404
    assert reply.json()["type"] == "error" and reply.json()["error"]["type"] == "not_found_error"


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
