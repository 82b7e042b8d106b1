"""Currencies: ISO 4217 codes and their minor units, from the published table.

The table is the ``iso4217`` package's copy of the ISO 4217 list (kept up to
date by its maintainer, with the date of the edition in its version), never a
hand-typed one. Pure: the package reads its bundled data file on import, like
any module, and nothing else.

A currency is accepted when ISO 4217 lists it *with* a number of minor units
(KRW 0, USD 2, BHD 3, CLF 4). That leaves out the codes that are not money a
payment is made in, whose minor units the table gives as "N.A.": XXX (no
currency), XTS (reserved for testing), the precious metals (XAU, XAG, XPD,
XPT), the SDR (XDR) and the bond-market units (XBA-XBD, XSU, XUA).

What the minor unit is for: ``Money.amount`` is already in the smallest unit
(the wire contract: "smallest currency unit, e.g. won for KRW"), so every
integer amount is a whole number of minor units and no divisibility check
follows from it. It says how an amount reads in major units
(``to_major``: KRW 100000 is 100000 won, USD 100000 is 1000.00 dollars), for
whatever shows amounts to people.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from types import MappingProxyType

import iso4217

MINOR_UNITS: Mapping[str, int] = MappingProxyType(
    {c.code: c.exponent for c in iso4217.Currency if c.exponent is not None}
)


def is_currency(code: str) -> bool:
    """``code`` is an ISO 4217 currency with minor units (upper case: ``KRW``, not ``krw``)."""
    return code in MINOR_UNITS


def minor_units(code: str) -> int:
    """How many decimal places the currency's minor unit has (KRW 0, USD 2). KeyError if unknown."""
    return MINOR_UNITS[code]


def to_major(amount: int, code: str) -> Decimal:
    """``amount`` (smallest units) in major units: ``to_major(100000, "USD")`` is 1000.00."""
    return Decimal(amount).scaleb(-minor_units(code))
