"""How the Ollama simulator (:mod:`batchq.sim.process`) behaves, and the parsers of its list
flags."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "SimConfig",
    "default_size_gb",
    "parse_duration",
    "parse_model_load_seconds",
    "parse_model_sizes",
    "parse_model_speeds",
    "parse_models",
]


def parse_models(text: str) -> tuple[str, ...]:
    """``a,b,c`` as given to ``batchq sim --models``."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise ValueError("give at least one model name")
    return names


def _parse_pairs(text: str, unit: str, example: str) -> tuple[tuple[str, float], ...]:
    pairs: list[tuple[str, float]] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, eq, number = part.rpartition("=")  # the last '=': names hold ':' but never '='
        try:
            value = float(number)
        except ValueError:
            value = math.nan
        if not eq or not name.strip() or math.isnan(value):
            raise ValueError(f"{part!r} is not NAME={unit}, e.g. {example}")
        pairs.append((name.strip(), value))
    return tuple(pairs)


def parse_model_speeds(text: str) -> tuple[tuple[str, float], ...]:
    """``NAME=RATE[,NAME=RATE...]`` as given to ``batchq sim --model-speeds``."""
    return _parse_pairs(text, "TOKENS_PER_SECOND", "qwen3:8b=40")


def parse_model_sizes(text: str) -> tuple[tuple[str, float], ...]:
    """``NAME=GB[,NAME=GB...]`` as given to ``batchq sim --model-sizes``."""
    return _parse_pairs(text, "GB", "qwen3:8b=5.2")


def parse_model_load_seconds(text: str) -> tuple[tuple[str, float], ...]:
    """``NAME=SECONDS[,...]`` as given to ``batchq sim --model-load-seconds``."""
    return _parse_pairs(text, "SECONDS", "qwen3:8b=4")


_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_GO_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|\u00b5s|ms|s|m|h)")


def parse_duration(value: object) -> float:
    """Seconds of a ``keep_alive`` as Ollama's ``api.Duration`` reads it: a number of seconds or
    a Go duration string (``"5m"``, ``"1h30m"``, ``"300ms"``); any negative one means forever
    (``math.inf``). Raises ValueError for anything else."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"json: cannot unmarshal {type(value).__name__} into a duration")
    if isinstance(value, str):
        text = value.strip()
        sign = -1.0 if text.startswith("-") else 1.0
        body = text.lstrip("+-")
        if body == "0":
            return 0.0
        if not body or _GO_DURATION.sub("", body):
            raise ValueError(f'time: invalid duration "{value}"')
        amount = sum(float(n) * _GO_UNITS[u] for n, u in _GO_DURATION.findall(body))
        value = sign * amount
    if math.isnan(value):
        raise ValueError(f"invalid duration {value!r}")
    return math.inf if value < 0 else float(value)


# Resident sizes of the default models, as ``ollama ps`` shows them at a 4096 context.
_KNOWN_SIZES = {"llama3.2": 2.0, "qwen3:8b": 5.0, "gemma3:4b": 3.0, "nomic-embed-text": 0.3}


def default_size_gb(name: str) -> float:
    """The simulated VRAM a model takes when ``--model-sizes`` does not say: the known models'
    own, else about 0.6 GB per billion parameters at Q4 (``:8b``), 0.3 GB for an embedding
    model, 2 GB for anything else."""
    base = name.removesuffix(":latest")
    if base in _KNOWN_SIZES:
        return _KNOWN_SIZES[base]
    if billions := re.search(r":(\d+(?:\.\d+)?)b$", base):
        return round(float(billions.group(1)) * 0.625, 3)
    return 0.3 if "embed" in base else 2.0


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

    Residency follows Ollama's ``server/sched.go`` (see :mod:`batchq.sim.scheduler`): at most
    ``max_loaded`` models and, with ``vram_gb`` > 0, at most that many GB of ``model_sizes``
    (a model not listed takes :func:`default_size_gb`); a model that does not fit waits for
    victims to be unloaded. An idle model unloads when its ``keep_alive`` (the last request's
    ``keep_alive`` field, else ``keep_alive`` here) has passed; ``0`` unloads it as soon as it
    is idle, a negative one never. A load takes the model's ``model_load_seconds`` entry, else
    ``load_seconds``.

    One ``/api/embed`` request is one pass of ``embed_overhead + latency + T / prompt_rate``
    seconds, with ``T`` the tokens of all its inputs: its N inputs share the overhead, so they
    cost far less than N requests of one input each (as the GPU embeds them as one batch).
    Each vector depends only on the model, the seed, ``embed_dim`` and its own text, never on
    the other inputs of its request. An input of more than ``embed_context`` tokens with
    ``truncate: false`` fails the whole request (400), as it does in Ollama.
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
    model_load_seconds: tuple[tuple[str, float], ...] = field(
        default=(),
        metadata={
            "parse": parse_model_load_seconds,
            "help": "load seconds of some models, overriding --load-seconds for them, "
            "e.g. qwen3:8b=4,llama3.2=1.5",
        },
    )
    vram_gb: float = _flag(0.0, "GB of VRAM the loaded models share (0: no limit)")
    model_sizes: tuple[tuple[str, float], ...] = field(
        default=(),
        metadata={
            "parse": parse_model_sizes,
            "help": "GB of VRAM some models take, e.g. qwen3:8b=5.2 (others: llama3.2 2, "
            "qwen3:8b 5, gemma3:4b 3, nomic-embed-text 0.3, else 0.6 per billion parameters)",
        },
    )
    keep_alive: str = _flag(
        "5m",
        "how long a model stays loaded once idle when a request gives no keep_alive, as "
        "OLLAMA_KEEP_ALIVE (seconds or a duration like 30s; negative: forever)",
    )
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
    embed_overhead: float = _flag(
        0.01, "seconds an /api/embed request costs whatever the number of its inputs"
    )
    embed_context: int = _flag(
        2048,
        "tokens (words) an embedding input may have, as num_ctx; a request with a longer one "
        "and truncate false is refused with a 400, as Ollama does",
    )
