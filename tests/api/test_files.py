"""OpenAI's Files API of ``batchq serve``, through the official ``openai`` client against a
live ``serve`` process."""

from __future__ import annotations

import httpx
import openai
import pytest
from openai import OpenAI

from tests.api.live import KEY, Served, chat_lines

pytestmark = pytest.mark.e2e


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
