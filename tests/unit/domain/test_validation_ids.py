"""Ids refuse invisible formatting characters; free text keeps them (issue 13, finding 10)."""

from __future__ import annotations

from typing import Any

import pytest

from paysim.domain import validation
from paysim.domain.models import Metadata, PaymentStatus
from paysim.errors import InvalidArgument
from tests.unit.domain.test_domain import validate

# One of each kind the rule names; every one of them passed before.
INVISIBLE = {
    "rlo": "\u202e",  # RIGHT-TO-LEFT OVERRIDE, the "Trojan Source" character
    "lre": "\u202a",
    "pdf": "\u202c",
    "rli": "\u2067",
    "pdi": "\u2069",
    "rlm": "\u200f",
    "alm": "\u061c",
    "zwsp": "\u200b",
    "zwj": "\u200d",
    "bom": "\ufeff",
    "soft-hyphen": "\u00ad",
    "c1-nel": "\u0085",
    "c1-csi": "\u009b",
    "line-separator": "\u2028",
    "paragraph-separator": "\u2029",
    "tag-char": "\U000e0041",
}

CREATE_IDS = ["reservation_id", "user_id", "idempotency_key"]


@pytest.mark.parametrize("field", CREATE_IDS)
@pytest.mark.parametrize("char", INVISIBLE.values(), ids=INVISIBLE.keys())
def test_create_refuses_invisible_characters_in_ids(field: str, char: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        validate(**{field: f"user{char}1"})
    assert info.value.field == field
    assert char not in info.value.message  # never echoed: it would reorder the message


def test_session_id_is_an_id_too() -> None:
    with pytest.raises(InvalidArgument) as info:
        validate(metadata=Metadata(session_id="s\u202e1"))
    assert info.value.field == "metadata.session_id"


def test_the_message_says_what_is_wrong_and_what_to_send() -> None:
    with pytest.raises(InvalidArgument) as info:
        validation.check_id("user_id", "admin\u202egnp.exe", validation.MAX_ID_LEN)
    assert info.value.message.startswith("invalid user_id: ")
    assert "bidi" in info.value.reason
    assert "plain text" in info.value.reason


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (
            lambda v: validation.validate_cancel(
                payment_intent_id=v,
                reason="",
                refund_present=False,
                refund_amount=0,
                refund_currency="",
                idempotency_key="",
            ),
            "payment_intent_id",
        ),
        (
            lambda v: validation.validate_cancel(
                payment_intent_id="pay_1",
                reason="",
                refund_present=False,
                refund_amount=0,
                refund_currency="",
                idempotency_key=v,
            ),
            "idempotency_key",
        ),
        (
            lambda v: validation.validate_list(
                user_id=v,
                status=PaymentStatus.UNSPECIFIED,
                reservation_id="",
                page=0,
                page_size=0,
                cursor="",
            ),
            "user_id",
        ),
        (
            lambda v: validation.validate_list(
                user_id="u",
                status=PaymentStatus.UNSPECIFIED,
                reservation_id=v,
                page=0,
                page_size=0,
                cursor="",
            ),
            "reservation_id",
        ),
    ],
    ids=["cancel-payment-id", "cancel-key", "list-user", "list-reservation"],
)
def test_other_commands_refuse_them_too(call: Any, field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        call("pay\u2066x")
    assert info.value.field == field


@pytest.mark.parametrize(
    "value",
    ["rsv_42", "예약-1", "사용자", "user@example.com", "Ünïcödé-ид", "ユーザー", "a b"],
)
def test_plain_ids_in_any_script_pass(value: str) -> None:
    assert validation.check_id("user_id", value, validation.MAX_ID_LEN) == value


def test_free_text_keeps_format_characters_but_not_controls() -> None:
    # An emoji sequence (ZWJ) and a right-to-left name (RLM) are legitimate text.
    validation.check_text("reason", "family \U0001f468\u200d\U0001f469 trip", 512)
    validation.check_text("cardholder_name", "\u05d3\u05d5\u05d3\u200f", 128)
    with pytest.raises(InvalidArgument, match="control"):
        validation.check_text("reason", "a\u0085b", 512)  # C1 NEL is a control
