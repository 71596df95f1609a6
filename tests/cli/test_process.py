"""The command line as a shell meets it: real ``batchq`` processes whose stdout is a pipe
closed early or whose stdin is closed, ``--version``, and shell completion."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_sync

from batchq.cli.main import main
from batchq.errors import RedisUnavailable
from batchq.sim.process import SimConfig, running_sim
from batchq.store.connection import redis_errors
from tests.procs import batchq, env_for, piped, wait_done

ROOT = Path(__file__).parents[2]
CONSOLE_SCRIPT = Path(sys.executable).parent / "batchq"


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    # Replies of ~100 tokens: a few hundred results outgrow a pipe's buffer many times over.
    with running_sim(SimConfig(parallel=8, eval_tokens_per_s=0, response_tokens=100)) as sim:
        yield sim.url


def prompts(tmp_path: Path, n: int) -> Path:
    src = tmp_path / "p.jsonl"
    src.write_text("".join(json.dumps(f"prompt {i}") + "\n" for i in range(n)))
    return src


def test_results_into_a_pipe_closed_early_ends_quietly(
    redis_url: str, prefix: str, tmp_path: Path, sim_url: str
) -> None:
    env = env_for(redis_url, prefix, tmp_path / "home", sim_url)
    bid = batchq(env, "submit", str(prompts(tmp_path, 400)), "--model", "llama3.2").stdout.strip()
    batchq(env, "worker", "--burst")
    assert wait_done(env, bid)["succeeded"] == 400
    # `batchq results B | head -1`: the reader takes a line and goes away.
    with piped(env, "results", bid) as (proc, stdout, stderr):
        assert json.loads(stdout.readline())["index"] == 0
        stdout.close()
        err = stderr.read()
        assert proc.wait(60) == 141, err
    assert err == ""  # neither "cannot reach Redis" nor a traceback


def test_a_redis_fault_is_still_one_and_a_closed_pipe_is_not() -> None:
    url = "redis://h:1"
    reset = f"cannot reach Redis at {url}: reset"
    with pytest.raises(RedisUnavailable, match=reset), redis_errors(url):
        raise redis_sync.ConnectionError("reset")
    for raw in (ConnectionResetError("raw socket error"), OSError(113, "No route to host")):
        with pytest.raises(RedisUnavailable, match="cannot reach Redis"), redis_errors(url):
            raise raw
    with pytest.raises(BrokenPipeError), redis_errors(url):
        raise BrokenPipeError(32, "Broken pipe")


def closed_stdin(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``batchq ARGS <&-``, as a shell runs it."""
    return subprocess.run(
        ["sh", "-c", 'exec "$0" -m batchq "$@" <&-', sys.executable, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_submit_and_run_from_a_closed_stdin_say_so_in_one_line(
    redis_url: str, prefix: str, tmp_path: Path, sim_url: str
) -> None:
    env = env_for(redis_url, prefix, tmp_path / "home", sim_url)
    message = "batchq: error: cannot read standard input (-): it is closed\n"
    proc = closed_stdin(env, "submit", "-", "--model", "m")
    assert (proc.returncode, proc.stderr) == (2, message)
    proc = closed_stdin(env, "run", "-", "-o", str(tmp_path / "out.jsonl"), "--model", "m")
    assert (proc.returncode, proc.stderr) == (2, message)
    assert json.loads(batchq(env, "list", "--json").stdout) == []


def test_version_is_the_package_metadata(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert importlib.metadata.version("batchq") == declared
    assert capsys.readouterr().out == f"batchq {declared}\n"


def complete(line: str, tmp_path: Path) -> list[str]:
    """What the shell hook that ``register-python-argcomplete batchq`` prints gets back for
    ``line`` (argcomplete's protocol, with the answer in a file instead of fd 8)."""
    answer = tmp_path / "completions"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BATCHQ_", "_ARGCOMPLETE"))}
    env.update(
        _ARGCOMPLETE="1",
        _ARGCOMPLETE_IFS="\n",
        _ARGCOMPLETE_STDOUT_FILENAME=str(answer),
        COMP_LINE=line,
        COMP_POINT=str(len(line)),
        COMP_TYPE="9",
        BATCHQ_HOME=str(tmp_path / "home"),
    )
    proc = subprocess.run(
        [str(CONSOLE_SCRIPT)], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return [word.rstrip() for word in answer.read_text().split("\n")]


def test_shell_completion_of_commands_and_options(tmp_path: Path) -> None:
    assert complete("batchq sta", tmp_path) == ["status"]
    assert set(complete("batchq s", tmp_path)) == {"submit", "status", "serve", "sim"}
    assert "--format" in complete("batchq results b_1 --for", tmp_path)
    assert complete("batchq home s", tmp_path) == ["show", "stop"]
    # The README's way to enable it is installed with batchq.
    assert (CONSOLE_SCRIPT.parent / "register-python-argcomplete").exists()
    assert not (tmp_path / "home").exists()  # completing starts no server


def test_commands_do_not_import_argcomplete() -> None:
    code = (
        "import sys\nfrom batchq.cli.main import main\n"
        "try:\n    main(['--version'])\nexcept SystemExit:\n    pass\n"
        "print('argcomplete' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("_ARGCOMPLETE")}
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.stdout.splitlines()[-1] == "False", proc.stderr
