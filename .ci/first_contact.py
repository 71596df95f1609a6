"""What a new user meets, run by `.ci/run` in the bare venv of README step 1 (no test extras).

It uses the standard library and the installed product only, and fails (exit 1, saying what)
unless:
- every module of ``batchq`` and ``workers`` imports;
- README step 1's main job, run against ``batchq sim`` as the README shows, writes a result for
  every line of ``examples/prompts.jsonl``, each succeeded, in input order;
- ``batchq submit`` plus one ``batchq worker --burst`` drains the same file.

The commands are read from the README itself, so the README and this check cannot drift apart.
No Redis is configured: every command meets at the embedded server under a fresh
``BATCHQ_HOME``, as on a machine with no Redis.

    .venv/bin/python .ci/first_contact.py
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
INSTALL = "python3 -m venv .venv && .venv/bin/pip install -e . && "
STEP_TIMEOUT = 180.0


def fail(msg: str) -> None:
    print(f"first contact: FAILED: {msg}", file=sys.stderr)
    raise SystemExit(1)


def import_everything() -> int:
    n = 0
    for top in ("batchq", "workers"):
        pkg = importlib.import_module(top)
        n += 1
        for mod in pkgutil.walk_packages(pkg.__path__, prefix=top + "."):
            if mod.name.endswith(".__main__"):  # runs the CLI; imported by `python -m` only
                continue
            try:
                importlib.import_module(mod.name)
            except Exception as e:  # any failure to import is the finding
                fail(f"import {mod.name}: {type(e).__name__}: {e}")
            n += 1
    return n


def readme_main_job() -> list[str]:
    """README step 1's main job command, as argv for this venv."""
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith(INSTALL):
            argv = shlex.split(line[len(INSTALL) :])
            if argv[0] != ".venv/bin/batchq":
                fail(f"README step 1 runs {argv[0]!r}, not .venv/bin/batchq")
            return [str(BIN / "batchq"), *argv[1:]]
    fail(f"README has no step 1 line starting {INSTALL!r}")
    raise AssertionError  # unreachable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            fail(f"batchq sim exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    fail(f"batchq sim did not listen on {port} within {timeout:.0f} s")


def run(argv: list[str], env: dict[str, str], cwd: Path) -> str:
    print(
        "first contact: $", shlex.join(Path(a).name if a.startswith(str(BIN)) else a for a in argv)
    )
    try:
        proc = subprocess.run(
            argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=STEP_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        fail(f"{shlex.join(argv)} did not finish within {STEP_TIMEOUT:.0f} s")
    if proc.returncode != 0:
        fail(f"{shlex.join(argv)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def expected_ids(path: Path) -> list[str]:
    ids = []
    for i, line in enumerate(path.read_text().splitlines()):
        obj: Any = json.loads(line)
        ids.append(obj["custom_id"] if isinstance(obj, dict) and "custom_id" in obj else str(i))
    return ids


def check_results(path: Path, want: list[str]) -> None:
    lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    got = [r.get("custom_id") for r in lines]
    if got != want:
        fail(f"{path.name}: custom_ids {got}, expected {want} in input order")
    for r in lines:
        if r.get("status") != "succeeded":
            fail(f"{path.name}: {r.get('custom_id')} is {r.get('status')}: {r.get('error')}")


def main() -> None:
    print(f"first contact: imported {import_everything()} modules of batchq and workers")
    examples = ROOT / "examples" / "prompts.jsonl"
    want = expected_ids(examples)
    work = Path(tempfile.mkdtemp(prefix="batchq-first-contact-"))
    port = free_port()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("BATCHQ_", "REDIS_", "OLLAMA_"))
    }
    env |= {"BATCHQ_HOME": str(work / "home"), "OLLAMA_HOST": f"127.0.0.1:{port}"}
    sim_log = (work / "sim.log").open("wb")
    sim = subprocess.Popen(
        [str(BIN / "batchq"), "sim", "--port", str(port)],
        env=env,
        stdout=sim_log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_port(port, sim, 60)
        # The README's main job, from the repository root where its relative paths point.
        job = readme_main_job()
        out = ROOT / job[job.index("-o") + 1]
        out.unlink(missing_ok=True)
        run(job, env, ROOT)
        check_results(out, want)
        out.unlink()
        print(f"first contact: the main job: {len(want)}/{len(want)} succeeded, in input order")

        batchq = str(BIN / "batchq")
        sub = json.loads(
            run([batchq, "submit", str(examples), "--model", "llama3.2", "--json"], env, work)
        )
        run([batchq, "worker", "--burst"], env, work)
        res = work / "burst.jsonl"
        run([batchq, "results", sub["batch_id"], "-o", str(res)], env, work)
        check_results(res, want)
        print(f"first contact: submit + worker --burst: {len(want)}/{len(want)} succeeded")
    finally:
        sim.terminate()
        sim.wait(30)
        sim_log.close()
        # The embedded server outlives the commands that started it, as it does for a user.
        subprocess.run([str(BIN / "batchq"), "home", "stop"], env=env, timeout=60, check=False)


if __name__ == "__main__":
    main()
