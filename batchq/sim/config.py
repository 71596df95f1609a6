"""How the Ollama simulator (:mod:`batchq.sim.process`) behaves, and the parsers of its list
flags."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SimConfig", "parse_model_speeds", "parse_models"]


def parse_models(text: str) -> tuple[str, ...]:
    """``a,b,c`` as given to ``batchq sim --models``."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise ValueError("give at least one model name")
    return names


def parse_model_speeds(text: str) -> tuple[tuple[str, float], ...]:
    """``NAME=RATE[,NAME=RATE...]`` as given to ``batchq sim --model-speeds``."""
    speeds: list[tuple[str, float]] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, eq, rate = part.rpartition("=")  # the last '=': names hold ':' but never '='
        try:
            value = float(rate)
        except ValueError:
            value = math.nan
        if not eq or not name.strip() or math.isnan(value):
            raise ValueError(f"{part!r} is not NAME=TOKENS_PER_SECOND, e.g. qwen3:8b=40")
        speeds.append((name.strip(), value))
    return tuple(speeds)


def _flag(default: Any, about: str) -> Any:
    """A field that ``batchq sim`` offers as a flag, with its help text."""
    return field(default=default, metadata={"help": about})


@dataclass
class SimConfig:
    """How the simulated server behaves; the defaults look like one 8B model on a consumer GPU.

    Rates <= 0 or infinite mean "instant". With B slots of a model busy, each request evaluates at
    ``rate * B**0.78 / B`` (measured Ollama scaling), where the rate is the model's entry in
    ``model_speeds`` or else ``eval_tokens_per_s``: models of different speeds make a model
    benchmark show a difference. Failure probabilities are drawn from a ``random.Random(seed)``
    per server, so a run's failure sequence is reproducible.
    """

    seed: int = _flag(0, "seed of the failure dice")
    models: tuple[str, ...] = field(
        default=("llama3.2", "qwen3:8b", "gemma3:4b", "nomic-embed-text"),
        metadata={"parse": parse_models, "help": "models served, comma-separated"},
    )
    model_speeds: tuple[tuple[str, float], ...] = field(
        default=(),
        metadata={
            "parse": parse_model_speeds,
            "help": "eval tokens/s of some models, overriding --eval-tokens-per-s for them, "
            "e.g. qwen3:8b=40,gemma3:4b=120 (each NAME must be one of --models)",
        },
    )
    parallel: int = _flag(1, "slots per loaded model, as OLLAMA_NUM_PARALLEL")
    max_queue: int = _flag(512, "requests waiting for a slot before a 503, as OLLAMA_MAX_QUEUE")
    max_loaded: int = _flag(1, "models resident at once (0: no limit), as OLLAMA_MAX_LOADED_MODELS")
    load_seconds: float = _flag(0.0, "seconds to load a model that is not resident")
    prompt_tokens_per_s: float = _flag(2000.0, "prompt evaluation speed")
    eval_tokens_per_s: float = _flag(100.0, "generation speed of one request alone in the GPU")
    latency: float = _flag(0.0, "seconds added to every request before its first token")
    response_tokens: int = _flag(8, "tokens in every reply (fewer if num_predict says so)")
    fail_500: float = _flag(0.0, "probability of a 500 (the runner died) before a reply starts")
    fail_503: float = _flag(0.0, "probability of a 503 server busy whatever the queue")
    fail_midstream: float = _flag(0.0, "probability of an error line after streaming began")
    fail_runaway: float = _flag(
        0.0,
        "share of prompts whose replies never end (on every attempt), as from a looping model",
    )
    slow_rate: float = _flag(0.0, "probability of a request that stalls --slow-seconds more")
    slow_seconds: float = _flag(30.0, "the stall of a slow request")
    embed_dim: int = _flag(768, "length of an embedding vector (nomic-embed-text's)")
