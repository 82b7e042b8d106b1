"""Webhook signatures: the contract's legacy header, Standard Webhooks, verify() and its CLI.

Expected signatures come from independent computations (HMAC written out from
its definition with hashlib; the Standard Webhooks spec's published test
vector), never from the code under test.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import re
from pathlib import Path

import httpx
import pytest

from paysim.delivery.signing import (
    HEADER_NAMES,
    build_headers,
    legacy_signature,
    standard_key,
    standard_signature,
)
from paysim.webhooks import Verified, WebhookVerificationError, verify, verify_cli

SECRET = "payment-sim-dev-secret"
OLD_SECRET = "the-secret-being-rotated-out"
WRONG = "not-our-secret-7f3a"
# The secret, id, timestamp, body and signature published with the Standard
# Webhooks reference implementations.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TS = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

TS = 1_700_000_000
BODY = (
    b'{"payment_id":"pi_123","reservation_id":"rsv_1","status":"PAYMENT_STATUS_COMPLETED",'
    b'"amount":100000,"currency":"KRW","timestamp":1700000000,'
    b'"event_type":"payment.status_updated"}'
)
EVENT_ID = "evt_01"


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    """RFC 2104 from its definition, so the checks do not share code with paysim."""
    block = 64
    if len(key) > block:
        key = hashlib.sha256(key).digest()
    key = key.ljust(block, b"\0")
    inner = hashlib.sha256(bytes(k ^ 0x36 for k in key) + message).digest()
    return hashlib.sha256(bytes(k ^ 0x5C for k in key) + inner).digest()


def spec_signature(secret: str, msg_id: str, ts: int, body: bytes) -> str:
    """The spec: key = base64 after "whsec_" (else, paysim's choice, the UTF-8 bytes)."""
    prefix = "whsec_"
    key = base64.b64decode(secret[len(prefix) :]) if secret.startswith(prefix) else secret.encode()
    signed = msg_id.encode() + b"." + str(ts).encode() + b"." + body
    return "v1," + base64.b64encode(hmac_sha256(key, signed)).decode()


# --- signing -----------------------------------------------------------------


def test_the_independent_hmac_is_right() -> None:
    # RFC 4231 test case 2, so the reference used below is itself checked.
    assert hmac_sha256(b"Jefe", b"what do ya want for nothing?").hex() == (
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )


def test_legacy_signature_is_lowercase_hex_hmac_of_the_raw_body() -> None:
    signature = legacy_signature(SECRET, BODY)
    assert signature == "sha256=" + hmac_sha256(SECRET.encode(), BODY).hex()
    assert re.fullmatch(r"sha256=[0-9a-f]{64}", signature)


def test_standard_signature_reproduces_the_published_test_vector() -> None:
    assert standard_signature([SPEC_SECRET], SPEC_ID, SPEC_TS, SPEC_BODY) == SPEC_SIGNATURE
    assert spec_signature(SPEC_SECRET, SPEC_ID, SPEC_TS, SPEC_BODY) == SPEC_SIGNATURE


@pytest.mark.parametrize(
    "secret", [SECRET, SPEC_SECRET, "whsec_" + base64.b64encode(b"k").decode()]
)
def test_standard_signature_matches_an_independent_implementation(secret: str) -> None:
    assert standard_signature([secret], EVENT_ID, TS, BODY) == spec_signature(
        secret, EVENT_ID, TS, BODY
    )


def test_standard_key_decodes_whsec_secrets_and_takes_others_as_utf8() -> None:
    assert standard_key("whsec_" + base64.b64encode(b"\x00\xffkey").decode()) == b"\x00\xffkey"
    assert standard_key("plain-ünicode") == "plain-ünicode".encode()


def test_a_whsec_secret_that_is_not_base64_is_refused_without_showing_it() -> None:
    with pytest.raises(ValueError, match="base64") as info:
        standard_key("whsec_not*base64!")
    assert "not*base64" not in str(info.value)


def test_legacy_headers_are_exact_and_in_order() -> None:
    headers = build_headers(
        secrets=(SECRET,), style="legacy", webhook_id=EVENT_ID, timestamp=TS, attempt=3, body=BODY
    )
    assert headers == [
        ("Content-Type", "application/json"),
        ("User-Agent", "PaymentSim/1.0"),
        ("X-Webhook-Signature", "sha256=" + hmac_sha256(SECRET.encode(), BODY).hex()),
        ("X-Webhook-Id", EVENT_ID),
        ("X-Webhook-Timestamp", "1700000000"),
        ("X-Webhook-Attempt", "3"),
    ]


def test_standard_headers_add_the_three_standard_webhooks_headers() -> None:
    headers = build_headers(
        secrets=(SECRET,), style="standard", webhook_id=EVENT_ID, timestamp=TS, attempt=1, body=BODY
    )
    assert headers == [
        ("Content-Type", "application/json"),
        ("User-Agent", "PaymentSim/1.0"),
        ("X-Webhook-Signature", "sha256=" + hmac_sha256(SECRET.encode(), BODY).hex()),
        ("X-Webhook-Id", EVENT_ID),
        ("X-Webhook-Timestamp", "1700000000"),
        ("X-Webhook-Attempt", "1"),
        ("webhook-id", EVENT_ID),
        ("webhook-timestamp", "1700000000"),
        ("webhook-signature", spec_signature(SECRET, EVENT_ID, TS, BODY)),
    ]


def test_header_names_are_exactly_what_either_style_sets() -> None:
    # The sender drops a client default of any of these names: a header added to
    # build_headers but not here would be sent twice.
    names = {
        name.lower()
        for style in ("legacy", "standard")
        for name, _ in build_headers(
            secrets=(SECRET,), style=style, webhook_id=EVENT_ID, timestamp=TS, attempt=1, body=BODY
        )
    }
    assert names == HEADER_NAMES


def test_rotation_signs_standard_with_every_secret_and_legacy_with_the_first() -> None:
    headers = dict(
        build_headers(
            secrets=[SPEC_SECRET, OLD_SECRET],
            style="standard",
            webhook_id=EVENT_ID,
            timestamp=TS,
            attempt=1,
            body=BODY,
        )
    )
    assert headers["webhook-signature"].split(" ") == [
        spec_signature(SPEC_SECRET, EVENT_ID, TS, BODY),
        spec_signature(OLD_SECRET, EVENT_ID, TS, BODY),
    ]
    assert (
        headers["X-Webhook-Signature"] == "sha256=" + hmac_sha256(SPEC_SECRET.encode(), BODY).hex()
    )


def test_build_headers_refuses_an_unknown_style_and_no_secret() -> None:
    with pytest.raises(ValueError, match="style"):
        build_headers(
            secrets=(SECRET,),
            style="fancy",
            webhook_id=EVENT_ID,
            timestamp=TS,
            attempt=1,
            body=BODY,
        )
    with pytest.raises(ValueError, match="secret"):
        build_headers(
            secrets=(), style="legacy", webhook_id=EVENT_ID, timestamp=TS, attempt=1, body=BODY
        )


# --- verify ------------------------------------------------------------------


def signed(style: str, *, secrets: tuple[str, ...] = (SECRET,), ts: int = TS) -> dict[str, str]:
    return dict(
        build_headers(
            secrets=secrets, style=style, webhook_id=EVENT_ID, timestamp=ts, attempt=1, body=BODY
        )
    )


def test_verify_accepts_the_legacy_style() -> None:
    assert verify(BODY, signed("legacy"), SECRET, now=TS + 10) == Verified("legacy", EVENT_ID, TS)


def test_verify_accepts_the_standard_style_with_any_case_and_header_shape() -> None:
    pairs = [(name.upper(), value) for name, value in signed("standard").items()]
    assert verify(BODY, pairs, [SECRET], now=TS) == Verified("standard", EVENT_ID, TS)
    assert verify(BODY, httpx.Headers(pairs), SECRET, now=TS).style == "standard"


def test_verify_accepts_the_published_test_vector() -> None:
    headers = {"webhook-id": SPEC_ID, "webhook-timestamp": str(SPEC_TS)}
    headers["webhook-signature"] = "v1,bm9wZQ== " + SPEC_SIGNATURE  # a stale one first
    assert verify(SPEC_BODY, headers, SPEC_SECRET, now=SPEC_TS).webhook_id == SPEC_ID


@pytest.mark.parametrize("style", ["legacy", "standard"])
def test_verify_accepts_any_secret_during_rotation(style: str) -> None:
    headers = signed(style, secrets=(SECRET, OLD_SECRET))
    assert verify(BODY, headers, ["unrelated", SECRET], now=TS).style == style
    if style == "standard":  # the legacy header carries the first secret only
        assert verify(BODY, headers, OLD_SECRET, now=TS).style == style


@pytest.mark.parametrize("style", ["legacy", "standard"])
@pytest.mark.parametrize(
    ("now", "words"),
    [(TS + 301, "too old"), (TS - 301, "in the future")],
)
def test_verify_refuses_a_timestamp_outside_the_tolerance(style: str, now: int, words: str) -> None:
    headers = signed(style)
    assert verify(BODY, headers, SECRET, now=TS + 300).timestamp == TS  # the edge is inside
    assert verify(BODY, headers, SECRET, now=TS - 300).timestamp == TS
    with pytest.raises(WebhookVerificationError, match=words):
        verify(BODY, headers, SECRET, now=now)
    with pytest.raises(WebhookVerificationError, match=words):
        verify(BODY, headers, SECRET, tolerance_s=10, now=TS + (11 if words == "too old" else -11))


def test_legacy_replay_window_uses_the_signed_body_not_the_unsigned_header() -> None:
    # A captured delivery replayed an hour later with a fresh X-Webhook-Timestamp.
    headers = signed("legacy")
    headers["X-Webhook-Timestamp"] = str(TS + 3600)
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify(BODY, headers, SECRET, now=TS + 3600)


def _without(headers: dict[str, str], *names: str) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() not in names}


def _with(headers: dict[str, str], **changes: str) -> dict[str, str]:
    return {**headers, **{k.replace("_", "-"): v for k, v in changes.items()}}


STD = signed("standard")
LEG = _without(STD, "webhook-id", "webhook-timestamp", "webhook-signature")
REJECTIONS = [
    ("std tampered body", BODY.replace(b"100000", b"100001"), STD, SECRET, "no webhook-signature"),
    ("std wrong secret", BODY, STD, WRONG, "no webhook-signature matches"),
    ("std changed id", BODY, _with(STD, webhook_id="evt_02"), SECRET, "matches"),
    ("std changed ts", BODY, _with(STD, webhook_timestamp=str(TS + 1)), SECRET, "matches"),
    ("std no id", BODY, _without(STD, "webhook-id"), SECRET, "webhook-id"),
    ("std no ts", BODY, _without(STD, "webhook-timestamp"), SECRET, "webhook-timestamp"),
    ("std bad ts", BODY, _with(STD, webhook_timestamp="soon"), SECRET, "not an integer"),
    ("std no v1", BODY, _with(STD, webhook_signature="v2,abc"), SECRET, "no v1 signature"),
    ("leg tampered body", BODY.replace(b"100000", b"100001"), LEG, SECRET, "does not match"),
    ("leg wrong secret", BODY, LEG, WRONG, "does not match"),
    ("leg no signature", BODY, _without(LEG, "x-webhook-signature"), SECRET, "no signature"),
    ("leg other scheme", BODY, _with(LEG, **{"X-Webhook-Signature": "sha1=00"}), SECRET, "sha256="),
]


@pytest.mark.parametrize(
    ("body", "headers", "secret", "words"),
    [case[1:] for case in REJECTIONS],
    ids=[case[0] for case in REJECTIONS],
)
def test_verify_refuses(body: bytes, headers: dict[str, str], secret: str, words: str) -> None:
    with pytest.raises(WebhookVerificationError, match=words) as info:
        verify(body, headers, secret, now=TS)
    message = str(info.value)
    assert SECRET not in message
    assert secret not in message
    assert legacy_signature(secret, body).removeprefix("sha256=") not in message
    assert standard_signature([secret], EVENT_ID, TS, body).removeprefix("v1,") not in message


@pytest.mark.parametrize(
    ("body", "words"),
    [(b"not json", "not JSON"), (b"\xff\xfe", "not JSON"), (b'{"timestamp":"1"}', "integer")],
)
def test_legacy_verify_needs_a_json_body_with_a_timestamp(body: bytes, words: str) -> None:
    headers = {"X-Webhook-Signature": "sha256=" + hmac_sha256(SECRET.encode(), body).hex()}
    with pytest.raises(WebhookVerificationError, match=words):
        verify(body, headers, SECRET, now=TS)


def test_verify_refuses_to_run_without_a_secret_or_with_a_nonsense_clock() -> None:
    for secrets in ("", [], [SECRET, ""]):
        with pytest.raises(ValueError, match="secret"):
            verify(BODY, LEG, secrets, now=TS)
    with pytest.raises(ValueError, match="now"):
        verify(BODY, LEG, SECRET, now=float("nan"))
    with pytest.raises(ValueError, match="tolerance"):
        verify(BODY, LEG, SECRET, tolerance_s=float("nan"), now=TS)


# --- paysim webhook verify ----------------------------------------------------


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="paysim webhook verify")
    verify_cli.add_arguments(parser)
    return verify_cli.main(parser.parse_args(list(argv)))


def header_args(headers: dict[str, str]) -> list[str]:
    return [arg for name, value in headers.items() for arg in ("--header", f"{name}: {value}")]


@pytest.fixture
def body_file(tmp_path: Path) -> Path:
    path = tmp_path / "body.json"
    path.write_bytes(BODY)
    return path


def test_cli_reports_a_valid_delivery(body_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--secret", "other", "--secret", SECRET, "--body", str(body_file), "--now", str(TS)]
    assert run_cli(*argv, *header_args(STD)) == 0
    out, err = capsys.readouterr()
    assert out == f"valid: standard webhook id={EVENT_ID} timestamp={TS}\n"
    assert err == ""


def test_cli_reports_a_tampered_body(body_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    body_file.write_bytes(BODY + b"\n")
    argv = ["--secret", SECRET, "--body", str(body_file), "--now", str(TS)]
    assert run_cli(*argv, *header_args(LEG)) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("invalid: X-Webhook-Signature does not match")
    assert SECRET not in err


def test_cli_reads_secrets_from_the_environment_and_the_body_from_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WEBHOOK_SECRET", f"other, {SECRET}")
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(BODY)))
    assert run_cli("--now", str(TS + 299), *header_args(LEG)) == 0
    assert capsys.readouterr().out == f"valid: legacy webhook id={EVENT_ID} timestamp={TS}\n"
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(BODY)))
    assert run_cli("--now", str(TS + 301), *header_args(LEG)) == 1
    assert "too old" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--header", "X-Webhook-Signature sha256=00"], "expects 'Name: value'"),
        (["--body", "/nonexistent/body.json"], "cannot read the body"),
        (["--secret", "whsec_*"], "base64"),
    ],
)
def test_cli_usage_errors_exit_2(
    argv: list[str], words: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WEBHOOK_SECRET", SECRET)
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(BODY)))
    assert run_cli(*argv, *header_args(STD)) == 2
    assert words in capsys.readouterr().err


def test_cli_without_any_secret_is_a_usage_error(
    body_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("WEBHOOK_SECRET", raising=False)
    assert run_cli("--body", str(body_file), *header_args(LEG)) == 2
    assert "no secret" in capsys.readouterr().err


def test_cli_refuses_a_negative_tolerance_as_argparse_does() -> None:
    with pytest.raises(SystemExit) as info:
        run_cli("--secret", SECRET, "--tolerance", "-1")
    assert info.value.code == 2
