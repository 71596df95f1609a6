"""Text from elsewhere printed with every control character visible."""

from __future__ import annotations

import io
import json
import logging
import sys
import unicodedata
from pathlib import Path

import pytest
from rich.console import Console

from batchq.cli.control import _human_item
from batchq.monitor.top import Snapshot
from batchq.monitor.top import render as top_render
from batchq.monitor.watch import Rates, make_view
from batchq.monitor.watch import render as watch_render
from batchq.records import AttemptError, ItemInfo, ItemState
from batchq.terminal import EscapingFormatter, printable
from tests.helpers import status as batch_status
from tests.helpers import worker_info
from tests.procs import batchq, env_for


def test_every_control_character_is_escaped_and_the_rest_kept() -> None:
    hostile = "\x1b]0;pwned\x07\x1b[2J\rok\b\x9b31m\x00\x7f\u202etxt.exe\u2028"
    out = printable(hostile)
    assert out == ("\\x1b]0;pwned\\x07\\x1b[2J\\x0dok\\x08\\x9b31m\\x00\\x7f\\u202etxt.exe\\u2028")
    assert all(c.isprintable() for c in out)
    controls = "".join(c for c in map(chr, range(0x110000)) if unicodedata.category(c) == "Cc")
    assert len(controls) == 65
    assert not any(unicodedata.category(c) == "Cc" for c in printable(controls))
    kept = "naïve 東京 \\x1b tab-free [bold]x[/bold] 🙂"
    assert printable(kept) == kept


# Retitles the window and clears the screen; then a one-byte CSI and a markup tag for rich.
HOSTILE = "\x1b]0;pwned\x07\x1b[2J\x9b31m[bold]x"


def _raw_controls(text: str) -> list[str]:
    return [c for c in text if c != "\n" and unicodedata.category(c) == "Cc"]


def test_cli_shows_hostile_names_metadata_and_ids_escaped(
    valkey_url: str, prefix: str, tmp_path: Path
) -> None:
    env = env_for(valkey_url, prefix, tmp_path, "http://127.0.0.1:9")
    line = json.dumps({"custom_id": "id" + HOSTILE, "prompt": "p", "model": "m"})
    bid = batchq(
        env, "submit", "-", "--name", HOSTILE, "--meta", "k=" + HOSTILE, input=line + "\n"
    ).stdout.strip()
    for args in (["status", bid], ["item", bid, "id" + HOSTILE]):
        out = batchq(env, *args).stdout
        assert _raw_controls(out) == [] and printable(HOSTILE) in out, args
    for args in (["status"], ["list"]):
        # A table may fold the longer escaped text: its start shows it escaped, not dropped.
        out = batchq(env, *args).stdout
        assert _raw_controls(out) == [] and "\\x1b]0;pwned\\x07" in out, args
    # --json keeps the text as it is: JSON escapes it, and programs want it whole.
    assert json.loads(batchq(env, "status", bid, "--json").stdout)["name"] == HOSTILE


def test_item_top_and_watch_show_hostile_errors_escaped(capsys: pytest.CaptureFixture[str]) -> None:
    info = ItemInfo(
        batch_id="b_0123456789abcdef",
        index=0,
        custom_id="c" + HOSTILE,
        status=ItemState.FAILED,
        attempts=1,
        errors=[AttemptError(type="ollama" + HOSTILE, message=HOSTILE, attempt=1)],
        result=None,
    )
    _human_item(info)
    printed = capsys.readouterr().out
    assert _raw_controls(printed) == [] and printed.count(printable(HOSTILE)) == 3

    worker = worker_info(
        "gpu" + HOSTILE + ":1:ab", endpoints=["http://h" + HOSTILE], last_error=HOSTILE
    )
    status = batch_status(3, 1, name=HOSTILE)
    view = make_view(status, [worker], Rates(), 0.0)
    for renderable in (
        top_render(Snapshot([worker], 0, worker.started_at), None),
        watch_render(view),
    ):
        console = Console(width=300, record=True, color_system="truecolor", file=io.StringIO())
        console.print(renderable)
        text = console.export_text(styles=False)
        assert _raw_controls(text) == [] and printable(HOSTILE) in text


def test_log_lines_are_escaped_and_keep_their_line_breaks() -> None:
    formatter = EscapingFormatter("%(levelname)s %(message)s")
    try:
        raise ValueError(HOSTILE)
    except ValueError:
        record = logging.LogRecord("w", logging.ERROR, "f", 1, "ollama: %s", (HOSTILE,), None)
        record.exc_info = sys.exc_info()
    text = formatter.format(record)
    assert text.startswith(f"ERROR ollama: {printable(HOSTILE)}\nTraceback")
    assert _raw_controls(text) == [] and f"ValueError: {printable(HOSTILE)}" in text
