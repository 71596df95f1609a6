"""redact_url: where a URL points stays readable; no password, token, query value or fragment
survives, whatever characters the secret holds."""

from __future__ import annotations

import pytest

from batchq.redact import MASK, redact_url, redact_urls_in

SECRET = "s3cr3t"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://example.com/hook", "http://example.com/hook"),
        ("https://example.com:8443/a/b", "https://example.com:8443/a/b"),
        ("http://[::1]:8080/hook", "http://[::1]:8080/hook"),
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        (f"redis://:{SECRET}@localhost:6379/0", "redis://***@localhost:6379/0"),
        (f"redis://default:{SECRET}@h:6379/0", "redis://default:***@h:6379/0"),
        # A lone user is often the credential itself (a token).
        (f"https://{SECRET}@example.com/x", "https://***@example.com/x"),
        # "@" in the password: the userinfo ends at the last "@" of the authority.
        (f"redis://u:{SECRET}@more@h:1/0", "redis://u:***@h:1/0"),
        (f"redis://u:p@{SECRET}@h/0", "redis://u:***@h/0"),
        # An unescaped "/", "#" or "?" in the password still hides all of it.
        (f"redis://u:a/{SECRET}@h:1/0", "redis://u:***@h:1/0"),
        (f"redis://u:a#{SECRET}@h:1/0", "redis://u:***@h:1/0"),
        (f"redis://:a?{SECRET}@h:1/0", "redis://***@h:1/0"),
        (f"redis://h/0?password={SECRET}", "redis://h/0?password=***"),
        (
            f"https://h/hook?token={SECRET}&x=1&flag",
            "https://h/hook?token=***&x=***&***",
        ),
        (f"https://h/hook?{SECRET}", "https://h/hook?***"),
        (f"https://h/hook#{SECRET}", "https://h/hook#***"),
        (f"https://h/hook?a={SECRET}#{SECRET}", "https://h/hook?a=***#***"),
        (
            f"redis+sentinel://:{SECRET}@s1:26379,s2:26379/mymaster/0",
            "redis+sentinel://***@s1:26379,s2:26379/mymaster/0",
        ),
        # An "@" in the path of a URL without userinfo is left alone.
        ("https://h/users/@me/hook", "https://h/users/@me/hook"),
        ("", ""),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert SECRET not in redact_url(url)


def test_redacting_twice_changes_nothing() -> None:
    once = redact_url(f"https://u:{SECRET}@h/p?k={SECRET}#{SECRET}")
    assert redact_url(once) == once
    assert MASK in once


def test_text_that_is_no_url_keeps_all_but_its_query() -> None:
    assert redact_url("not a url") == "not a url"
    assert redact_url(f"h/p?k={SECRET}") == "h/p?k=***"


def test_urls_inside_a_message_are_redacted() -> None:
    message = f"Connection timeout to host https://u:{SECRET}@h:1/p?t={SECRET} (after 10 s)"
    assert redact_urls_in(message) == (
        "Connection timeout to host https://u:***@h:1/p?t=*** (after 10 s)"
    )
    assert redact_urls_in(f"'http://h/?k={SECRET}'") == "'http://h/?k=***'"
    assert redact_urls_in("no url here") == "no url here"
