"""URLs made fit for logs, messages and terminals: :func:`redact_url` keeps where a URL points
(scheme, host, port, path, the names of its query parameters) and hides what may be a secret
(the password or token in its userinfo, every query value, the fragment).

In the core because every layer shows URLs: the store its Redis URL, the workers the
``--notify`` URLs they POST to, the CLI both. It imports nothing of batchq.
"""

from __future__ import annotations

import re

__all__ = ["MASK", "redact_url", "redact_urls_in"]

MASK = "***"

# scheme "://" authority, then the rest (path, query, fragment). The authority ends at the
# first "/", "?" or "#" (RFC 3986), except that an unescaped "@" further on still ends a
# userinfo: a password like "p/ss@" or "p#ss@" must not leak its tail into the path.
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)(.*)$", re.DOTALL)


def redact_url(url: str) -> str:
    """``url`` with its userinfo's password (or a lone user, often a token) replaced by
    ``***``, every query value by ``***`` (a parameter without ``=`` wholly) and any fragment by
    ``***``. Text that is not a ``scheme://`` URL has only its query and fragment redacted."""
    m = _SCHEME.match(url)
    prefix, rest = (m.group(1), m.group(2)) if m else ("", url)
    if m:
        auth, rest = _split_userinfo(rest)
        prefix += auth
    rest, _, fragment = rest.partition("#")
    rest, q, query = rest.partition("?")
    out = prefix + rest
    if q:
        out += "?" + "&".join(_redact_param(p) for p in query.split("&"))
    if fragment:
        out += "#" + MASK
    return out


# A URL inside free text (an exception's message): up to whitespace or a quote.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def redact_urls_in(text: str) -> str:
    """``text`` with every ``scheme://`` URL in it redacted (see :func:`redact_url`): for
    messages that libraries build around the URL they were given."""
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group()), text)


def _split_userinfo(rest: str) -> tuple[str, str]:
    """(the userinfo redacted, with its ``@``, or ""; what follows it)."""
    end = len(rest)
    for sep in "/?#":
        i = rest.find(sep)
        if i != -1:
            end = min(end, i)
    at = rest.rfind("@", 0, end)
    if at == -1 and "@" in rest[end:] and not _looks_like_host(rest[:end]):
        # The authority is no host[:port], so an unescaped "/", "?" or "#" in a password cut
        # it short: the userinfo runs to the last "@" (hiding too much beats showing a secret).
        at = rest.rfind("@")
    if at == -1:
        return "", rest
    user, colon, _ = rest[:at].partition(":")
    # "user:password@" keeps the user; a lone "token@" (a credential by itself) does not.
    shown = f"{user}:{MASK}" if colon and user else MASK
    return shown + "@", rest[at + 1 :]


# host, [v6 address] or empty, then an optional numeric port; a comma-separated list of them
# (redis+sentinel:// names several).
_ONE_HOST = r"(\[[0-9A-Za-z:.%]*\]|[^:,\[\]@]*)(:[0-9]*)?"
_HOST_PORT = re.compile(rf"^{_ONE_HOST}(,{_ONE_HOST})*$")


def _looks_like_host(authority: str) -> bool:
    return _HOST_PORT.match(authority) is not None


def _redact_param(param: str) -> str:
    if not param:
        return param
    key, eq, _ = param.partition("=")
    return f"{key}={MASK}" if eq else MASK
