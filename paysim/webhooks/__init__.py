"""Webhooks: signing and sending them (paysim's side), verifying them (a consumer's side).

A consumer verifies a delivery with::

    from paysim.webhooks import verify
    verified = verify(body, request.headers, secrets)  # raises WebhookVerificationError

``paysim webhook verify`` does the same from the command line.
"""

from __future__ import annotations

from paysim.webhooks.signing import Verified, WebhookVerificationError, verify

__all__ = ["Verified", "WebhookVerificationError", "verify"]
