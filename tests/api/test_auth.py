"""API keys: the comparison, the exposure rule, and keys kept out of the settings' repr."""

from __future__ import annotations

import pytest

from batchq.api.auth import MAX_KEY_BYTES, check_exposure, matches
from batchq.errors import ConfigError
from batchq.settings import Settings


def test_a_key_matches_only_itself() -> None:
    keys = [b"sk-one", b"sk-two"]
    assert matches("sk-two", keys) and matches("sk-one", keys)
    assert not matches("sk-on", keys) and not matches("sk-one ", keys) and not matches("", keys)
    assert not matches("sk-one", [])
    assert not matches("x" * (MAX_KEY_BYTES + 1), [b"x" * (MAX_KEY_BYTES + 1)])


def test_beyond_loopback_needs_a_key_or_no_auth() -> None:
    check_exposure(loopback=True, keys=[], no_auth=False)
    check_exposure(loopback=False, keys=["k"], no_auth=False)
    check_exposure(loopback=False, keys=[], no_auth=True)
    with pytest.raises(ConfigError, match="--no-auth"):
        check_exposure(loopback=False, keys=[], no_auth=False)
    with pytest.raises(ConfigError, match="one or the other"):
        check_exposure(loopback=True, keys=["k"], no_auth=True)


def test_keys_are_comma_separated_and_not_shown() -> None:
    s = Settings(api_keys=" sk-a, sk-b ,")
    assert s.api_key_list == ["sk-a", "sk-b"]
    assert "sk-a" not in repr(s)
