"""Webhooks for their consumers: verifying a delivery (the public, documented kit).

paysim's own side (signing and sending) lives in ``paysim.delivery``; the
signature format is defined once, in ``paysim.delivery.signing``. A consumer
verifies a delivery with::

    from paysim.webhooks import verify
    verified = verify(body, request.headers, secrets)  # raises WebhookVerificationError

``paysim webhook verify`` does the same from the command line.
"""

from __future__ import annotations

from paysim.delivery.signing import Verified, WebhookVerificationError, verify

__all__ = ["Verified", "WebhookVerificationError", "verify"]
