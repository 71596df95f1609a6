"""The CLI's batch-control options and commands, run in-process against a real server (the
end-to-end tests run the same commands as processes next to real workers)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis

from batchq.cli.main import main
from batchq.store.keys import Keys


class Cli:
    def __init__(self, redis_url: str, prefix: str, capsys: pytest.CaptureFixture[str]) -> None:
        self.common = ["--redis", redis_url, "--prefix", prefix]
        self.capsys = capsys

    def __call__(self, *args: str, code: int = 0) -> tuple[str, str]:
        self.capsys.readouterr()
        assert main([*args, *self.common]) == code
        out, err = self.capsys.readouterr()
        return out, err

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--json")[0])


@pytest.fixture
def cli(redis_url: str, prefix: str, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(redis_url, prefix, capsys)


def prompts(tmp_path: Path, n: int) -> Path:
    src = tmp_path / "p.jsonl"
    src.write_text("".join(json.dumps(f"prompt {i}") + "\n" for i in range(n)))
    return src


def test_submit_meta_shows_in_status_and_list(cli: Cli, tmp_path: Path) -> None:
    src = prompts(tmp_path, 3)
    bid = cli("submit", str(src), "--model", "m", "--meta", "team=nlp", "--meta", "run=a b")[0]
    bid = bid.strip()
    assert cli.json("status", bid)["metadata"] == {"team": "nlp", "run": "a b"}
    assert [b["metadata"] for b in cli.json("list")] == [{"team": "nlp", "run": "a b"}]
    assert "meta      team=nlp run=a b\n" in cli("status", bid)[0]
    assert cli("list")[0].rstrip().endswith("team=nlp run=a b")


def test_bad_meta_is_one_line_and_stores_nothing(cli: Cli, tmp_path: Path) -> None:
    src = prompts(tmp_path, 2)
    for bad, message in (
        ("nokey", "--meta: 'nokey' is not KEY=VALUE"),
        ("k=" + "v" * 513, "--meta: value of 'k' is longer than 512 characters (513)"),
    ):
        _, err = cli("submit", str(src), "--model", "m", "--meta", bad, code=2)
        assert err == f"batchq: error: {message}\n"
    assert cli.json("list") == []


def test_pause_resume_print_the_status(cli: Cli, tmp_path: Path) -> None:
    bid = cli("submit", str(prompts(tmp_path, 2)), "--model", "m")[0].strip()
    assert "state     paused\n" in cli("pause", bid)[0]
    assert cli.json("status", bid)["state"] == "paused"
    assert cli.json("resume", bid)["state"] == "queued"
    cli("cancel", bid)
    _, err = cli("pause", bid, code=1)
    assert err == f"batchq: error: batch {bid} is cancelled: nothing left to pause\n"


def test_item_by_custom_id(cli: Cli, tmp_path: Path) -> None:
    src = tmp_path / "ids.jsonl"
    src.write_text('{"custom_id": "first", "prompt": "a"}\n"b"\n')
    bid = cli("submit", str(src), "--model", "m")[0].strip()
    got = cli.json("item", bid, "first")
    assert got == {
        "batch_id": bid,
        "index": 0,
        "custom_id": "first",
        "status": "queued",
        "attempts": 0,
        "errors": [],
        "result": None,
    }
    out, _ = cli("item", bid, "1")
    assert out == (f"batch     {bid}\nitem      1  (index 1)\nstatus    queued\nattempts  0\n")
    _, err = cli("item", bid, "second", code=1)
    assert err == f"batchq: error: batch {bid} has no item with custom_id 'second'\n"


def test_item_human_output_lists_errors_and_the_response(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from batchq.cli.control import _human_item
    from batchq.records import AttemptError, ItemInfo, ItemResult, ItemState, ItemStatus

    info = ItemInfo(
        batch_id="b_0123456789abcdef",
        index=4,
        custom_id="q4",
        status=ItemState.SUCCEEDED,
        attempts=3,
        errors=[
            AttemptError(attempt=1, type="server_busy", message="busy", status_code=503, at="T1"),
            AttemptError(attempt=2, type="timeout", message="no reply within 5 s"),
        ],
        result=ItemResult(
            index=4, custom_id="q4", status=ItemStatus.SUCCEEDED, response="line\n" + "w" * 500
        ),
    )
    _human_item(info)
    lines = capsys.readouterr().out.splitlines()
    assert lines[2:6] == [
        "status    succeeded",
        "attempts  3",
        "error     #1 server_busy 503: busy  (T1)",
        "error     #2 timeout: no reply within 5 s",
    ]
    assert lines[6] == "response  line " + "w" * 395 + "…"


def test_retry_needs_a_choice_and_known_ids(cli: Cli, tmp_path: Path) -> None:
    bid = cli("submit", str(prompts(tmp_path, 2)), "--model", "m")[0].strip()
    _, err = cli("retry", bid, code=2)
    assert err == (
        "batchq: error: say which items to run again: --failed, --expired and/or --ids "
        "CUSTOM_ID ...\n"
    )
    _, err = cli("retry", bid, "--ids", "0", "nine", code=1)
    assert err == f"batchq: error: batch {bid} has no item with custom_id 'nine'\n"
    # Known but not final yet: nothing to run again.
    assert cli.json("retry", bid, "--failed", "--ids", "0", "1") == {"batch_id": bid, "requeued": 0}
    assert cli("retry", bid, "--failed")[0] == f"0 item(s) of {bid} queued again\n"


def test_submit_deadline(cli: Cli, tmp_path: Path) -> None:
    src = str(prompts(tmp_path, 2))
    bid = cli("submit", src, "--model", "m", "--deadline", "1h")[0].strip()
    s = cli.json("status", bid)
    assert (s["expired"], s["queued"]) == (0, 2) and s["deadline"] > s["created_at"]
    human = cli("status", bid)[0]
    assert "0 cancelled, 0 expired\n" in human and f"deadline  {s['deadline']}\n" in human
    _, err = cli("submit", src, "--model", "m", "--deadline", "2001-01-01T00:00Z", code=2)
    assert err == "batchq: error: --deadline: '2001-01-01T00:00Z' is in the past\n"
    far = "99999999999999999999d"
    _, err = cli("submit", src, "--model", "m", "--deadline", far, code=2)
    assert err == f"batchq: error: --deadline: {far!r} is more than 10 years from now\n"
    assert len(cli.json("list")) == 1


def test_a_bad_stored_time_breaks_neither_list_nor_status(
    cli: Cli, tmp_path: Path, redis_url: str, prefix: str
) -> None:
    # What a deadline of 99999999999999999999d was stored as before it was refused, and
    # values no batchq writes: another client's, or a hand's.
    bad = {"deadline": str(86_400_000 * 99999999999999999999), "created_at": "yesterday"}
    bad_too = {"deadline": "-1e400", "started_at": "1.7e+12", "finished_at": "\xff"}
    bids = [cli("submit", str(prompts(tmp_path, 1)), "--model", "m")[0].strip() for _ in "ab"]
    with redis.Redis.from_url(redis_url) as r:
        for bid, fields in zip(bids, (bad, bad_too), strict=True):
            r.hset(Keys(prefix).batch(bid).meta, mapping=fields)
    listed = {b["batch_id"]: b for b in cli.json("list")}
    assert listed.keys() == set(bids)
    first, second = listed[bids[0]], listed[bids[1]]
    assert (first["deadline"], first["created_at"]) == ("9999-12-31T23:59:59.999+00:00", None)
    assert (second["deadline"], second["finished_at"]) == ("0001-01-01T00:00:00.000+00:00", None)
    assert second["started_at"] == "2023-11-14T22:13:20.000+00:00"
    status = cli.json("status", bids[0])
    assert (status["deadline"], status["created_at"]) == (first["deadline"], None)
    assert "deadline  9999-12-31T23:59:59.999+00:00\n" in cli("status", bids[0])[0]
    assert all(bid in cli("list")[0] for bid in bids)


def test_submit_notify(cli: Cli, tmp_path: Path) -> None:
    src = str(prompts(tmp_path, 1))
    bid = cli("submit", src, "--model", "m", "--notify", "https://example.test/h?k=1")[0].strip()
    assert cli.json("status", bid)["notify"] == "waiting"
    assert "notify    waiting\n" in cli("status", bid)[0]
    for bad in ("ftp://example.test/x", "example.test/x", "http:///x"):
        _, err = cli("submit", src, "--model", "m", "--notify", bad, code=2)
        assert err == f"batchq: error: --notify: {bad!r} is not an http:// or https:// URL\n"
    assert len(cli.json("list")) == 1


def test_submit_refuses_a_notify_target_naming_it_redacted(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = str(prompts(tmp_path, 1))
    metadata = "http://169.254.169.254/latest/meta-data/?token=s3cr3t"
    _, err = cli("submit", src, "--model", "m", "--notify", metadata, code=2)
    assert err == (
        "batchq: error: --notify: 'http://169.254.169.254/latest/meta-data/?token=***' "
        "is refused: 169.254.169.254 is link-local (where cloud metadata services live)\n"
    )
    # Loopback: allowed by default, refused once the setting is off.
    local = "http://u:s3cr3t@127.0.0.1:8080/h"
    assert cli("submit", src, "--model", "m", "--notify", local)[0].strip()
    monkeypatch.setenv("BATCHQ_NOTIFY_ALLOW_PRIVATE", "false")
    _, err = cli("submit", src, "--model", "m", "--notify", local, code=2)
    assert "--notify: 'http://u:***@127.0.0.1:8080/h' is refused: 127.0.0.1 is a private" in err
    assert "s3cr3t" not in err
    assert len(cli.json("list")) == 1


def test_worker_concurrency_flags() -> None:
    from batchq.cli.common import settings_from
    from batchq.cli.main import _parser

    args = _parser().parse_args(["worker", "--concurrency", "auto", "--max-concurrency", "8"])
    s = settings_from(args)
    assert (s.concurrency, s.max_concurrency, s.max_in_flight) == ("auto", 8, 8)
    s = settings_from(_parser().parse_args(["worker", "--concurrency", "3"]))
    assert (s.concurrency, s.max_in_flight) == (3, 4)
    with pytest.raises(SystemExit):
        _parser().parse_args(["worker", "--concurrency", "lots"])
