"""Submit options: metadata pairs, deadlines, priority and weight, and the object that carries
them checked."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

import pytest

from batchq import clock
from batchq.errors import InputError
from batchq.options import (
    MAX_DEADLINE,
    SubmitOptions,
    check_metadata,
    check_notify_url,
    check_priority,
    check_weight,
    parse_deadline,
    parse_meta_pairs,
    resolve_deadline,
)


def test_meta_pairs_parse_in_order() -> None:
    got = parse_meta_pairs(["team=nlp", "run=7", "note=a=b", "empty="])
    assert got == {"team": "nlp", "run": "7", "note": "a=b", "empty": ""}
    assert list(got) == ["team", "run", "note", "empty"]


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        (["novalue"], "'novalue' is not KEY=VALUE"),
        (["=x"], "a key is empty"),
        (["a=1", "a=2"], "key 'a' is given twice"),
        ([f"k{i}=v" for i in range(17)], "at most 16 pairs, got 17"),
        (["k" * 65 + "=v"], "longer than 64 characters (65)"),
        (["k=" + "v" * 513], "value of 'k' is longer than 512 characters (513)"),
    ],
)
def test_bad_meta_is_a_clear_error(pairs: list[str], message: str) -> None:
    with pytest.raises(InputError, match="field 'metadata'") as e:
        parse_meta_pairs(pairs)
    assert message in str(e.value)
    assert e.value.field == "metadata"


def test_limits_are_inclusive() -> None:
    full = {f"k{i:02}" + "x" * 60: "v" * 512 for i in range(16)}
    assert check_metadata(full) == full
    with pytest.raises(InputError, match="strings"):
        check_metadata({"k": 5})  # type: ignore[dict-item]


NOW = 1_700_000_000_000  # 2023-11-14T22:13:20Z


@pytest.mark.parametrize(
    ("text", "after_s"),
    [("90s", 90), ("30m", 1800), ("1h30m", 5400), ("2d", 172800), ("0.5h", 1800), (" 1m1s ", 61)],
)
def test_deadline_durations(text: str, after_s: int) -> None:
    assert parse_deadline(text, now_ms=NOW) == NOW + after_s * 1000


def test_deadline_moments() -> None:
    assert parse_deadline("2023-11-15T00:00:00+00:00", now_ms=NOW) == 1_700_006_400_000
    assert parse_deadline("2023-11-15T00:00Z", now_ms=NOW) == 1_700_006_400_000
    naive = datetime(2030, 1, 2, 3, 4, 5)  # the wall clock of this machine
    assert parse_deadline("2030-01-02T03:04:05", now_ms=NOW) == int(naive.timestamp() * 1000)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0s", "'0s' is not after now"),
        ("2023-11-14T22:13:19Z", "is in the past"),
        ("tomorrow", "'tomorrow' is neither a duration (30m, 1h30m, 2d) nor an ISO 8601 time"),
        ("5", "neither a duration"),
        ("1h 30m", "neither a duration"),
        ("-1h", "neither a duration"),
        ("99999999999999999999d", "'99999999999999999999d' is more than 10 years from now"),
        ("9" * 400 + "s", "is more than 10 years from now"),  # a float duration of inf
        ("3651d", "is more than 10 years from now"),
        ("9999-12-31T23:59:59-14:00", "is more than 10 years from now"),  # the year 10000
        ("0001-01-01T00:00+14:00", "is in the past"),
    ],
)
def test_bad_deadlines(text: str, message: str) -> None:
    with pytest.raises(InputError, match="field 'deadline'") as e:
        parse_deadline(text, now_ms=NOW)
    assert message in str(e.value)


def test_a_deadline_is_at_most_ten_years_from_now() -> None:
    assert timedelta(days=3650) == MAX_DEADLINE
    assert parse_deadline("3650d", now_ms=NOW) == NOW + 3650 * 86_400_000
    assert resolve_deadline(MAX_DEADLINE, now_ms=NOW) == NOW + 3650 * 86_400_000
    for far in (MAX_DEADLINE + timedelta(milliseconds=1), timedelta.max, datetime.max):
        with pytest.raises(InputError, match=r"field 'deadline'.*more than 10 years from now"):
            resolve_deadline(far, now_ms=NOW)


def test_priority_and_weight_checks() -> None:
    assert check_priority(-7) == -7 and check_weight(3) == 3.0
    for bad in (True, "1", 10_000):
        with pytest.raises(InputError, match="priority"):
            check_priority(bad)
    for bad_w in (0, -1, float("nan"), float("inf"), "2", 1e6):
        with pytest.raises(InputError, match="weight"):
            check_weight(bad_w)


def test_submit_options_are_checked_when_made_and_resolve_the_deadline_from_now() -> None:
    before = clock.now_ms()
    opts = SubmitOptions(metadata={"team": "nlp"}, deadline="90m", priority=2, weight=3)
    assert opts.weight == 3.0 and isinstance(opts.weight, float)
    assert opts.deadline_ms is not None
    assert before + 90 * 60_000 <= opts.deadline_ms <= clock.now_ms() + 90 * 60_000
    assert SubmitOptions(deadline=timedelta(seconds=5)).deadline_ms is not None
    assert SubmitOptions().deadline_ms is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.name = "x"  # type: ignore[misc]
    for bad, field in (
        ({"notify": "ftp://x"}, "notify"),
        ({"metadata": {"k": 1}}, "metadata"),
        ({"deadline": "yesterday"}, "deadline"),
        ({"deadline": 5}, "deadline"),
        ({"priority": 2000}, "priority"),
        ({"weight": 0}, "weight"),
    ):
        with pytest.raises(InputError, match=f"field '{field}'"):
            SubmitOptions(**bad)


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/?token=s3cr3t",
        "http://u:s3cr3t@[fe80::1]/hook",
        "http://[fd00:ec2::254]/?k=s3cr3t",
    ],
)
def test_a_link_local_notify_url_is_refused_and_shown_redacted(url: str) -> None:
    with pytest.raises(InputError, match=r"field .notify.: .* is refused: ") as e:
        SubmitOptions(notify=url)
    assert "s3cr3t" not in str(e.value) and "***" in str(e.value)
    with pytest.raises(InputError, match="is refused"):
        check_notify_url(url, allow_private=True)


def test_private_notify_urls_are_refused_only_when_asked() -> None:
    assert SubmitOptions(notify="http://127.0.0.1:8080/h").notify == "http://127.0.0.1:8080/h"
    with pytest.raises(InputError, match="private or loopback"):
        check_notify_url("http://192.168.1.5/h?t=x", allow_private=False)
    assert check_notify_url("https://hooks.example.com/h", allow_private=False)
    private = SubmitOptions(notify="http://192.168.1.5/h")
    private.check_target(allow_private=True)
    with pytest.raises(InputError, match="private or loopback"):
        private.check_target(allow_private=False)


def test_naming_submit_options_resolves_nothing_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clock, "now_ms", lambda: 1_000_000)
    opts = SubmitOptions(deadline="1m")
    monkeypatch.setattr(clock, "now_ms", lambda: 2_000_000)  # the file's name comes later
    named = opts.named("prompts.jsonl")
    assert (named.name, named.deadline_ms) == ("prompts.jsonl", 1_060_000)
    assert opts.name is None
