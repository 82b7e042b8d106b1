"""``paysim webhook verify``: check a captured delivery from the command line.

    paysim webhook verify --secret S --body body.json \\
        --header "X-Webhook-Signature: sha256=…" [--header "webhook-id: …" …] \\
        [--tolerance 300] [--now 1700000000]

The body is read as raw bytes (``-``, the default, is stdin): save it exactly
as received, since one changed byte (a newline added by an editor) breaks the
signature. Without ``--secret`` the secrets come from WEBHOOK_SECRET
(comma-separated, as the server reads it); there is no built-in default, so a
check never passes by accident against the development secret. ``--now`` checks
an old capture as of the time it was taken.

Exit status: 0 valid (one line on stdout), 1 invalid (``invalid: <reason>`` on
stderr), 2 usage error.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from paysim.delivery.signing import WebhookVerificationError, verify


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``paysim webhook verify`` to ``parser``."""
    parser.add_argument(
        "--secret",
        action="append",
        metavar="S",
        help="a webhook secret; repeat for several (default: WEBHOOK_SECRET, comma-separated)",
    )
    parser.add_argument(
        "--body",
        default="-",
        metavar="FILE",
        help="the raw body as received (default: -, stdin)",
    )
    parser.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="a received header; repeat for each",
    )
    parser.add_argument(
        "--tolerance",
        type=_seconds,
        default=300.0,
        metavar="SECONDS",
        help="accepted distance between the signed timestamp and now (default: 300)",
    )
    parser.add_argument(
        "--now",
        type=_unix_seconds,
        default=None,
        metavar="UNIX_SECONDS",
        help="check as of this time instead of the current time",
    )


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a number of seconds, at least 0, got {text!r}")
    return value


def _unix_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected unix seconds, got {text!r}")
    return value


class _UsageError(Exception):
    pass


def main(args: argparse.Namespace) -> int:
    """Run the check; return the exit status (0 valid, 1 invalid, 2 usage error)."""
    try:
        secrets = _secrets(args.secret, os.environ)
        headers = [_header(h) for h in args.header]
        body = _read_body(args.body)
        verified = verify(body, headers, secrets, tolerance_s=args.tolerance, now=args.now)
    except _UsageError as exc:
        print(f"paysim webhook verify: error: {exc}", file=sys.stderr)
        return 2
    except WebhookVerificationError as exc:
        print(f"invalid: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # a whsec_ secret that is not base64
        print(f"paysim webhook verify: error: {exc}", file=sys.stderr)
        return 2
    webhook_id = verified.webhook_id if verified.webhook_id is not None else "-"
    print(f"valid: {verified.style} webhook id={webhook_id} timestamp={verified.timestamp}")
    return 0


def _secrets(given: list[str] | None, environ: Mapping[str, str]) -> list[str]:
    if given:
        if not all(given):
            raise _UsageError("--secret must not be empty")
        return given
    secrets = [s.strip() for s in environ.get("WEBHOOK_SECRET", "").split(",") if s.strip()]
    if not secrets:
        raise _UsageError("no secret: pass --secret or set WEBHOOK_SECRET")
    return secrets


def _header(text: str) -> tuple[str, str]:
    name, colon, value = text.partition(":")
    if not colon or not name.strip():
        raise _UsageError(f"--header expects 'Name: value', got {text!r}")
    return name.strip(), value.strip()


def _read_body(path: str) -> bytes:
    try:
        return sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise _UsageError(f"cannot read the body from {path}: {exc.strerror}") from None
