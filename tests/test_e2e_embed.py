"""End to end, batched embeddings (workers.embed_groups): a real worker process and the
simulator in its own process. One batch runs with each item alone (``BATCHQ_EMBED_BATCH=1``),
the same batch again grouped; every item's line of ``batchq results`` is the same either way
but for the durations, and the one bad item fails alone."""

from __future__ import annotations

import json
import signal
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchq.sim.process import expected_embedding
from tests.procs import Workers, batchq, env_for, sim_stats, simulator, status, wait_done
from tests.waits import wait_until

pytestmark = pytest.mark.e2e

SEED = 5
DIM = 8
MODEL = "nomic-embed-text"
N = 41
BAD = 17  # its input is longer than the simulator's context, and truncate is off
MULTI = 30  # an item of two inputs


@pytest.fixture(scope="module")
def embed_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # One slot and a cost per request, so jobs wait for their turn and groups form.
    args = ["--seed", str(SEED), "--embed-dim", str(DIM), "--embed-context", "5"]
    args += ["--parallel", "1", "--embed-overhead", "0.03", "--prompt-tokens-per-s", "0"]
    with simulator(tmp_path_factory.mktemp("sim"), *args) as url:
        yield url


def inputs(i: int) -> list[str]:
    if i == BAD:
        return ["far too many words for this little context"]
    if i == MULTI:
        return [f"first of {i}", f"second of {i}"]
    return [f"text {i}"]


def write_input(path: Path) -> None:
    with path.open("w") as f:
        for i in range(N):
            line = {"custom_id": f"e{i}", "model": MODEL, "truncate": False, "input": inputs(i)}
            f.write(json.dumps(line) + "\n")


def run_batch(env: dict[str, str], src: Path, tmp: Path, embed_batch: int) -> list[Any]:
    bid = json.loads(batchq(env, "submit", str(src), "--json").stdout)["batch_id"]
    logs = tmp / f"logs-{embed_batch}"
    logs.mkdir()
    workers = Workers({**env, "BATCHQ_EMBED_BATCH": str(embed_batch)}, logs)
    workers.start("--concurrency", "2")
    try:
        status = wait_done(env, bid)
    finally:
        codes = workers.stop()
    assert codes == [0], workers.logs()
    out = tmp / f"results-{embed_batch}.jsonl"
    batchq(env, "results", bid, "-o", str(out))
    assert (status["succeeded"], status["failed"], status["retried"]) == (N - 1, 1, 0), (
        out.read_text()
    )
    return [json.loads(line) for line in out.read_text().splitlines()]


def float32(vectors: list[list[float]]) -> list[list[float]]:
    return [array("f", v).tolist() for v in vectors]


def test_grouped_embeddings_match_one_request_per_item(
    redis_url: str, prefix: str, tmp_path: Path, embed_sim: str
) -> None:
    env = env_for(redis_url, prefix, tmp_path / "home", embed_sim)
    src = tmp_path / "in.jsonl"
    write_input(src)

    before = sim_stats(embed_sim)["embeds"]
    alone = run_batch(env, src, tmp_path, 1)
    middle = sim_stats(embed_sim)["embeds"]
    grouped = run_batch(env, src, tmp_path, 8)
    after = sim_stats(embed_sim)["embeds"]
    assert middle - before == N
    # Groups of up to 8 inputs, and a few more requests to find the bad item.
    assert after - middle <= N // 2, after - middle

    assert [r["index"] for r in grouped] == list(range(N))
    for one, many in zip(alone, grouped, strict=True):
        # The same line in the same order, keys and all, but for the request's durations.
        assert list(one) == list(many)
        assert list(one["metrics"] or {}) == list(many["metrics"] or {})
        keep = {k: v for k, v in one.items() if k != "metrics"}
        assert keep == {k: v for k, v in many.items() if k != "metrics"}

    for i, r in enumerate(grouped):
        assert r["custom_id"] == f"e{i}" and r["model"] == MODEL and r["attempts"] == 1
        if i == BAD:
            assert r["status"] == "failed" and "embeddings" not in r
            assert r["error"] == {
                "type": "invalid_request",
                "message": "the input length exceeds the context length",
                "status_code": 400,
            }
            continue
        assert r["status"] == "succeeded" and r["error"] is None
        want = [expected_embedding(MODEL, t, seed=SEED, dim=DIM) for t in inputs(i)]
        assert float32(r["embeddings"]) == want
        assert r["metrics"]["prompt_eval_count"] >= 1


def test_sigterm_finishes_groups_in_flight_and_wastes_no_attempt(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    # Each request takes a second at the first Ollama: the SIGTERM lands with groups at it.
    with (
        simulator(tmp_path, "--parallel", "1", "--embed-overhead", "1.0") as slow,
        simulator(tmp_path, "--parallel", "1") as fast,
    ):
        env = env_for(redis_url, prefix, tmp_path / "home", slow, BATCHQ_EMBED_BATCH="8")
        src = tmp_path / "in.jsonl"
        texts = [f"term {i}" for i in range(60)]
        src.write_text("".join(json.dumps({"input": t}) + "\n" for t in texts))
        bid = batchq(env, "submit", str(src), "--model", MODEL).stdout.strip()
        with Workers(env, tmp_path) as workers:
            first = workers.start("--concurrency", "2")
            # The first three items went alone (the worker had seen no embedding yet); then
            # groups: SIGTERM once two of them are at Ollama.
            wait_until(lambda: sim_stats(slow)["embeds"] >= 5, what="groups at Ollama")
            first.send_signal(signal.SIGTERM)
            assert first.wait(120) == 0, workers.logs()
            s = status(env, bid)
            sent = sim_stats(slow)["prompts"]
            assert (s["running"], s["failed"], s["succeeded"]) == (0, 0, len(sent))
            assert len(sent) > 3 + 8  # at least one whole group went out and was recorded
            workers.start("--concurrency", "2", env={**env, "OLLAMA_HOST": fast})
            wait_done(env, bid)
        after = sim_stats(fast)["prompts"]
    out = tmp_path / "r.jsonl"
    batchq(env, "results", bid, "-o", str(out))
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(r["status"], r["attempts"]) for r in rows] == [("succeeded", 1)] * len(texts)
    # Each text went out once: the groups the SIGTERM let finish, then the rest elsewhere.
    assert set(sent).isdisjoint(after) and {**sent, **after} == dict.fromkeys(texts, 1)
