"""Standard Webhooks signing, checked against the reference verifier: both secret forms, the
exact bytes, and secrets that are no key refused with a reason."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from batchq import clock
from batchq.signing import MIN_KEY_BYTES, signature_headers, webhook_key

KEY = bytes(range(32))
B64 = base64.b64encode(KEY).decode()


@pytest.mark.parametrize("secret", ["whsec_" + B64, B64, B64.rstrip("="), f" whsec_{B64}\n"])
def test_both_secret_forms_give_the_key(secret: str) -> None:
    assert webhook_key(secret) == KEY


@pytest.mark.parametrize(
    ("secret", "why"),
    [
        ("hunter2 hunter2", "base64"),
        ("whsec_not*base64", "base64"),
        ("whsec_" + base64.b64encode(b"short").decode(), f"at least {MIN_KEY_BYTES} bytes"),
    ],
)
def test_a_secret_that_is_no_key_is_refused(secret: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        webhook_key(secret)


def test_the_reference_verifier_accepts_the_signature_of_the_exact_bytes() -> None:
    body = '{"batch_id":"b_1","name":"café"}'.encode()
    now = clock.now_ms() // 1000
    headers = signature_headers(KEY, "b_1:1700000000000", now, body)
    assert headers["webhook-signature"].startswith("v1,")
    for secret in ("whsec_" + B64, B64):
        assert Webhook(secret).verify(body, headers) == {"batch_id": "b_1", "name": "café"}
    # The reference signer agrees byte for byte.
    ref = Webhook("whsec_" + B64).sign("b_1:1700000000000", datetime.fromtimestamp(now, UTC), body)
    assert headers["webhook-signature"] == ref
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + B64).verify(body + b" ", headers)
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + B64).verify(body, {**headers, "webhook-id": "b_1:other"})
