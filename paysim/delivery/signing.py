"""Webhook signatures: making them (``build_headers``) and checking them (``verify``).

Two styles, both HMAC-SHA256 over the raw body bytes:

* **legacy** (CONTRACT.md §2, always sent):
  ``X-Webhook-Signature: sha256=<lowercase hex HMAC(secret utf-8, body)>``.
  Only the body is signed; the contract puts a ``timestamp`` inside it.
* **standard** (https://www.standardwebhooks.com, as PortOne sends; added when
  WEBHOOK_SIGNATURE_STYLE=standard): ``webhook-id``, ``webhook-timestamp`` and
  ``webhook-signature: v1,<base64 HMAC(key, "<id>.<timestamp>.<body>")>``.
  The id and the timestamp are signed too.

Policy decisions:

* **Keys.** The legacy key is the secret's UTF-8 bytes, always. The Standard
  key is, as the spec says, ``base64decode(secret[len("whsec_"):])`` when the
  secret starts with ``whsec_`` (a secret of that shape that is not valid
  base64 is a ``ValueError``); any other secret is used as its UTF-8 bytes.
* **Rotation.** With several secrets, the Standard header carries one ``v1,``
  signature per secret (space-separated, in order) and the legacy header is
  signed with the first secret. ``verify`` accepts a match with any secret.
* **Replay window.** ``verify`` checks the timestamp that the signature
  covers: ``webhook-timestamp`` in the Standard style, the body's
  ``timestamp`` field in the legacy style. ``X-Webhook-Timestamp`` is *not*
  used: no signature covers it, so anyone replaying a captured body could set
  it to "now". The body's timestamp is the time of the payment's change, so a
  legacy retry delivered later than the tolerance fails the check: widen the
  tolerance to the retry window, or use the Standard style, whose timestamp
  is per attempt and signed.
* **Errors.** A ``WebhookVerificationError`` says what is wrong in words a
  person can act on; it never contains a secret or an expected signature.
  Comparisons are constant-time (``hmac.compare_digest``).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

LEGACY = "legacy"
STANDARD = "standard"
STANDARD_SECRET_PREFIX = "whsec_"

_FIXED_HEADERS = (("Content-Type", "application/json"), ("User-Agent", "PaymentSim/1.0"))
# Every header name ``build_headers`` can set, lower-cased, in either style.
HEADER_NAMES = frozenset(
    {
        "content-type",
        "user-agent",
        "x-webhook-signature",
        "x-webhook-id",
        "x-webhook-timestamp",
        "x-webhook-attempt",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    }
)
_TIMESTAMP = re.compile(r"[0-9]{1,15}")


# --- signing (paysim's side) ------------------------------------------------


def legacy_signature(secret: str, body: bytes) -> str:
    """``sha256=`` + lowercase hex HMAC-SHA256(secret as UTF-8, body): CONTRACT.md §2."""
    return "sha256=" + hmac.digest(secret.encode(), body, "sha256").hex()


def standard_key(secret: str) -> bytes:
    """The Standard Webhooks HMAC key of ``secret`` (see the module docstring)."""
    if not secret.startswith(STANDARD_SECRET_PREFIX):
        return secret.encode()
    try:
        return base64.b64decode(secret[len(STANDARD_SECRET_PREFIX) :], validate=True)
    except binascii.Error:
        raise ValueError(
            "a secret starting with 'whsec_' must be base64 after the prefix"
        ) from None


@lru_cache(maxsize=16)
def _standard_keys(secrets: tuple[str, ...]) -> tuple[bytes, ...]:
    return tuple(standard_key(s) for s in secrets)


def _standard_digest(key: bytes, webhook_id: str, timestamp: str, body: bytes) -> bytes:
    return hmac.digest(key, f"{webhook_id}.{timestamp}.".encode() + body, "sha256")


def standard_signature(secrets: Sequence[str], webhook_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,<base64>`` per secret, space-separated."""
    ts = str(int(timestamp))
    return " ".join(
        "v1," + base64.b64encode(_standard_digest(key, webhook_id, ts, body)).decode()
        for key in _standard_keys(tuple(secrets))
    )


def build_headers(
    *,
    secrets: Sequence[str],
    style: str,
    webhook_id: str,
    timestamp: int,
    attempt: int,
    body: bytes,
) -> list[tuple[str, str]]:
    """The headers of one delivery attempt, in a fixed order.

    Always: Content-Type, User-Agent, X-Webhook-Signature (first secret),
    X-Webhook-Id, X-Webhook-Timestamp, X-Webhook-Attempt. With ``style ==
    "standard"`` also webhook-id, webhook-timestamp, webhook-signature (every
    secret). A fresh list: the caller may append to it.
    """
    if not secrets:
        raise ValueError("at least one webhook secret is needed")
    ts = str(int(timestamp))
    headers = [
        *_FIXED_HEADERS,
        ("X-Webhook-Signature", legacy_signature(secrets[0], body)),
        ("X-Webhook-Id", webhook_id),
        ("X-Webhook-Timestamp", ts),
        ("X-Webhook-Attempt", str(attempt)),
    ]
    if style == STANDARD:
        headers += [
            ("webhook-id", webhook_id),
            ("webhook-timestamp", ts),
            ("webhook-signature", standard_signature(secrets, webhook_id, timestamp, body)),
        ]
    elif style != LEGACY:
        raise ValueError(f"unknown signature style {style!r}: expected legacy or standard")
    return headers


# --- verifying (a consumer's side) ------------------------------------------


class WebhookVerificationError(Exception):
    """A delivery is not authentic or not fresh. ``str()`` says why, without secrets."""


@dataclass(frozen=True)
class Verified:
    """What ``verify`` established: the style checked, the id and the signed timestamp.

    ``webhook_id`` is signed in the Standard style; in the legacy style it is
    the unsigned ``X-Webhook-Id`` header (None when absent), fit for
    de-duplication but not proof of anything.
    """

    style: str
    webhook_id: str | None
    timestamp: int | None


def verify(
    body: bytes,
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    secrets: str | Sequence[str],
    *,
    tolerance_s: float = 300.0,
    now: float | None = None,
) -> Verified:
    """Check that ``body`` and ``headers`` are a delivery signed with one of ``secrets``.

    ``body`` must be the raw bytes received. Header names are matched without
    regard to case; a repeated header counts with its first value. A single
    string is one secret (it is not split at commas). With a
    ``webhook-signature`` header the Standard style is checked, otherwise the
    legacy ``X-Webhook-Signature``. The signed timestamp must lie within
    ``tolerance_s`` of ``now`` (default: the current time). Raises
    ``WebhookVerificationError``; ``ValueError`` for a bad secret or tolerance.
    """
    keys = (secrets,) if isinstance(secrets, str) else tuple(secrets)
    if not keys or not all(keys):
        raise ValueError("at least one non-empty secret is needed")
    if not tolerance_s >= 0:  # also refuses nan, which would accept any timestamp
        raise ValueError("tolerance_s must be a number of seconds, at least 0")
    current = time.time() if now is None else now
    if not math.isfinite(current):
        raise ValueError("now must be a finite number of unix seconds")
    found = _lower_names(headers)
    if "webhook-signature" in found:
        return _verify_standard(body, found, keys, tolerance_s, current)
    return _verify_legacy(body, found, keys, tolerance_s, current)


def _lower_names(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> dict[str, str]:
    items = headers.items() if isinstance(headers, Mapping) else headers
    found: dict[str, str] = {}
    for name, value in items:
        found.setdefault(name.lower(), value)
    return found


def _same(expected: bytes, given: str) -> bool:
    # compare_digest refuses non-ASCII str: compare bytes, whatever the header held.
    return hmac.compare_digest(expected, given.encode("utf-8", "surrogatepass"))


def _verify_standard(
    body: bytes, found: dict[str, str], secrets: tuple[str, ...], tolerance: float, now: float
) -> Verified:
    webhook_id = found.get("webhook-id")
    raw_ts = found.get("webhook-timestamp")
    if webhook_id is None or raw_ts is None:
        raise WebhookVerificationError(
            "webhook-signature is present but webhook-id or webhook-timestamp is missing"
        )
    if not _TIMESTAMP.fullmatch(raw_ts):
        raise WebhookVerificationError("webhook-timestamp is not an integer of unix seconds")
    offered = [
        sig
        for version, _, sig in (t.partition(",") for t in found["webhook-signature"].split())
        if version == "v1"
    ]
    if not offered:
        raise WebhookVerificationError("webhook-signature holds no v1 signature")
    expected = [
        base64.b64encode(_standard_digest(key, webhook_id, raw_ts, body))
        for key in _standard_keys(secrets)
    ]
    if not any(_same(e, sig) for e in expected for sig in offered):
        raise WebhookVerificationError(
            "no webhook-signature matches: wrong secret, or the body, id or timestamp changed"
        )
    timestamp = int(raw_ts)
    _check_age(timestamp, now, tolerance, "webhook-timestamp")
    return Verified(STANDARD, webhook_id, timestamp)


def _verify_legacy(
    body: bytes, found: dict[str, str], secrets: tuple[str, ...], tolerance: float, now: float
) -> Verified:
    given = found.get("x-webhook-signature")
    if given is None:
        raise WebhookVerificationError(
            "no signature header: expected webhook-signature or X-Webhook-Signature"
        )
    if not given.startswith("sha256="):
        raise WebhookVerificationError("X-Webhook-Signature does not start with 'sha256='")
    if not any(_same(legacy_signature(s, body).encode(), given) for s in secrets):
        raise WebhookVerificationError(
            "X-Webhook-Signature does not match: wrong secret, or the body changed"
        )
    try:
        payload = json.loads(body)
    except ValueError:  # JSONDecodeError, UnicodeDecodeError
        raise WebhookVerificationError("the body is not JSON, so it has no timestamp") from None
    timestamp = payload.get("timestamp") if isinstance(payload, dict) else None
    if type(timestamp) is not int:
        raise WebhookVerificationError("the body has no integer 'timestamp' field")
    _check_age(timestamp, now, tolerance, "the body's timestamp")
    return Verified(LEGACY, found.get("x-webhook-id"), timestamp)


def _check_age(timestamp: int, now: float, tolerance: float, what: str) -> None:
    if timestamp < now - tolerance:
        raise WebhookVerificationError(
            f"{what} {timestamp} is too old: {now - timestamp:.0f} s before now,"
            f" tolerance {tolerance:g} s"
        )
    if timestamp > now + tolerance:
        raise WebhookVerificationError(
            f"{what} {timestamp} is in the future: {timestamp - now:.0f} s after now,"
            f" tolerance {tolerance:g} s"
        )
