"""Completion hooks signed the Standard Webhooks way (https://www.standardwebhooks.com), so a
receiver can tell a batchq POST from anyone else's and a replayed one from a fresh one:

- ``webhook-id``: the delivery's id, the same on every attempt of one completion (the
  ``Idempotency-Key`` value), so a receiver can drop repeats;
- ``webhook-timestamp``: when this attempt was signed, in seconds since the epoch;
- ``webhook-signature``: ``v1,`` and the base64 HMAC-SHA256, keyed by the secret, of
  ``{id}.{timestamp}.{body}``, over the body's exact bytes.

The secret (``BATCHQ_WEBHOOK_SECRET``) is ``whsec_`` and the base64 of the key, or that base64
alone: the two forms the reference libraries (``Webhook(secret)``) take, so one string
configures both ends. Core: it imports nothing of batchq.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

__all__ = ["MIN_KEY_BYTES", "SECRET_PREFIX", "signature_headers", "webhook_key"]

SECRET_PREFIX = "whsec_"
# The spec asks for 24 to 64 bytes; fewer than 16 is a password, not a key.
MIN_KEY_BYTES = 16


def webhook_key(secret: str) -> bytes:
    """The HMAC key a secret stands for; ValueError saying what is wrong with it."""
    b64 = secret.strip().removeprefix(SECRET_PREFIX)
    try:
        # Unpadded base64 is accepted, as the reference libraries accept it.
        key = base64.b64decode(b64 + "=" * (-len(b64) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(
            f"a webhook secret is {SECRET_PREFIX}<base64 of the key> (or the base64 alone)"
        ) from None
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(
            f"a webhook secret's key must be at least {MIN_KEY_BYTES} bytes, not {len(key)}"
        )
    return key


def signature_headers(key: bytes, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three headers that sign ``body`` as sent with ``msg_id`` at ``timestamp`` (s)."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
    }
