"""The README's promises about the command line, checked against real processes: the exit
codes of its table, and what ``retried`` counts."""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchq.sim.process import SimConfig, running_sim
from tests.conftest import free_port
from tests.procs import batchq, env_for, piped, wait_done

README = Path(__file__).parents[2] / "README.md"


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    with running_sim(SimConfig(parallel=4, eval_tokens_per_s=0)) as sim:
        yield sim.url


def exit_code_table() -> dict[int, str]:
    section = README.read_text().split("\n### Exit codes\n", 1)[1].split("\n#", 1)[0]
    rows = re.findall(r"^\| `(\d+)` \| (.+) \|$", section, flags=re.MULTILINE)
    return {int(code): text for code, text in rows}


def test_exit_codes_are_the_documented_ones(redis_url: str, prefix: str, tmp_path: Path) -> None:
    table = exit_code_table()
    env = env_for(redis_url, prefix, tmp_path / "home", "http://127.0.0.1:9")  # no Ollama
    bad, good = tmp_path / "bad.jsonl", tmp_path / "good.jsonl"
    bad.write_text('"ok"\n{"prompt": 5}\n')
    good.write_text('"ok"\n')
    down = {**env, "BATCHQ_REDIS_URL": f"redis://127.0.0.1:{free_port()}"}
    out = str(tmp_path / "out.jsonl")
    cases = [
        ("success", env, ["list"], 0),
        ("bad input line", env, ["submit", str(bad), "--model", "m"], 1),
        ("unknown batch", env, ["status", "b_0123456789abcdef"], 1),
        ("Redis unreachable", down, ["list"], 1),
        ("unknown option", env, ["list", "--nope"], 2),
        ("file that cannot be read", env, ["submit", str(tmp_path / "none.jsonl")], 2),
        ("Ollama unreachable", env, ["run", str(good), "-o", out, "--model", "m"], 2),
    ]
    for phrase, case_env, args, code in cases:
        assert phrase in table[code], (phrase, code, table)
        proc = batchq(case_env, *args, check=False)
        assert proc.returncode == code, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
    assert "interrupted" in table[130] and "closed early" in table[141]


def test_ctrl_c_exits_130(redis_url: str, prefix: str, tmp_path: Path) -> None:
    env = env_for(redis_url, prefix, tmp_path / "home", "http://127.0.0.1:9")
    bid = batchq(env, "submit", "-", "--model", "m", input='"p"\n').stdout.strip()
    with piped(env, "status", bid, "--watch", "--interval", "0.2") as (proc, stdout, stderr):
        assert stdout.readline().startswith(bid)  # watching: the first line is out
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 130
        assert "Traceback" not in stderr.read()


def test_retried_counts_a_workers_retries_not_batchq_retry(
    redis_url: str, prefix: str, tmp_path: Path, sim_url: str
) -> None:
    # As the README says of `retried`: a re-run by `batchq retry` shows in `attempts` only.
    env = env_for(redis_url, prefix, tmp_path / "home", sim_url)
    bid = batchq(env, "submit", "-", "--model", "no-such-model", input='"p"\n').stdout.strip()
    batchq(env, "worker", "--burst")
    s = wait_done(env, bid)
    assert (s["failed"], s["retried"]) == (1, 0)
    batchq(env, "retry", bid, "--failed")
    batchq(env, "worker", "--burst")
    s = wait_done(env, bid)
    assert (s["failed"], s["retried"]) == (1, 0)
    assert json.loads(batchq(env, "item", bid, "0", "--json").stdout)["attempts"] == 2
