"""The simulator's flag parsers: Go durations as Ollama's ``keep_alive`` reads them, the
per-model lists, and the model sizes it assumes."""

from __future__ import annotations

import math

import pytest

from batchq.sim.config import (
    default_size_gb,
    parse_duration,
    parse_model_load_seconds,
    parse_model_sizes,
)


def test_durations_read_as_ollama_reads_keep_alive() -> None:
    cases = {"5m": 300.0, "30s": 30.0, "1h30m": 5400.0, "300ms": 0.3, "1.5s": 1.5, "0": 0.0}
    for text, expected in cases.items():
        assert parse_duration(text) == pytest.approx(expected), text
    assert parse_duration(90) == 90.0 and parse_duration(0.25) == 0.25
    for forever in (-1, "-1m", -0.5):  # any negative one keeps the model loaded
        assert parse_duration(forever) == math.inf
    bads: tuple[object, ...] = ("5", "soon", "", "5 m", "m", True, None, [], math.nan)
    for bad in bads:
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_per_model_sizes_and_load_times_parse() -> None:
    assert parse_model_sizes("qwen3:8b=5.2, a=1") == (("qwen3:8b", 5.2), ("a", 1.0))
    assert parse_model_load_seconds("llama3.2=1.5") == (("llama3.2", 1.5),)
    with pytest.raises(ValueError, match="is not NAME=GB"):
        parse_model_sizes("qwen3:8b")
    with pytest.raises(ValueError, match="is not NAME=SECONDS"):
        parse_model_load_seconds("x=slow")


def test_default_sizes_follow_the_model_name() -> None:
    assert default_size_gb("llama3.2") == default_size_gb("llama3.2:latest") == 2.0
    assert (default_size_gb("qwen3:8b"), default_size_gb("gemma3:4b")) == (5.0, 3.0)
    assert default_size_gb("nomic-embed-text") == 0.3
    assert default_size_gb("mistral:7b") == pytest.approx(4.375)
    assert default_size_gb("mxbai-embed-large") == 0.3
    assert default_size_gb("phi") == 2.0
