"""Currencies are real ISO 4217 codes with their minor units (issue 13, finding 10)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from paysim.domain import currency, validation
from paysim.domain.models import Money
from paysim.errors import InvalidArgument
from tests.unit.domain.test_domain import validate


@pytest.mark.parametrize(
    ("code", "units"),
    [("KRW", 0), ("JPY", 0), ("USD", 2), ("EUR", 2), ("BHD", 3), ("KWD", 3), ("CLF", 4)],
)
def test_minor_units_come_from_the_iso_table(code: str, units: int) -> None:
    assert currency.minor_units(code) == units
    assert Money(1, code).minor_units == units
    validate(currency=code)


@pytest.mark.parametrize(
    "code",
    [
        "XXX",  # "no currency"
        "XTS",  # reserved for testing
        "XAU",  # gold: minor units "N.A."
        "XDR",  # special drawing rights
        "ABC",  # not a code at all
        "QQQ",
        "EUX",
    ],
)
def test_codes_that_are_not_a_currency_of_payment_are_refused(code: str) -> None:
    assert not currency.is_currency(code)
    with pytest.raises(InvalidArgument) as info:
        validate(currency=code)
    assert info.value.field == "amount.currency"
    assert f"{code} is not an ISO 4217 currency" in info.value.reason


def test_refund_currency_is_checked_the_same_way() -> None:
    with pytest.raises(InvalidArgument) as info:
        validation.validate_cancel(
            payment_intent_id="pay_1",
            reason="",
            refund_present=True,
            refund_amount=1,
            refund_currency="XXX",
            idempotency_key="",
        )
    assert info.value.field == "refund_amount.currency"


def test_amounts_are_already_in_minor_units_so_to_major_only_moves_the_point() -> None:
    assert currency.to_major(100_000, "KRW") == Decimal(100_000)
    assert currency.to_major(100_000, "USD") == Decimal("1000.00")
    assert currency.to_major(1, "BHD") == Decimal("0.001")


def test_the_table_is_the_published_one_not_a_short_list() -> None:
    assert len(currency.MINOR_UNITS) > 150
    assert all(len(code) == 3 and code.isupper() for code in currency.MINOR_UNITS)
