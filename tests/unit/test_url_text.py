"""shown_url: a URL as reports, the console and logs show it, with nothing secret."""

from __future__ import annotations

import pytest

from paysim.console.views import endpoint_of, safe_url
from paysim.faults.worker_check import describe_url
from paysim.url_text import UNPARSEABLE, shown_url

SECRET_URL = "https://user:hunter2@hooks.example.com:8443/paysim/in?token=abc#frag"


def test_the_full_form_keeps_scheme_host_port_and_path_only() -> None:
    assert shown_url(SECRET_URL) == "https://hooks.example.com:8443/paysim/in"


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"path": False}, "https://hooks.example.com:8443"),
        ({"scheme": False, "path": False}, "hooks.example.com:8443"),
        ({"scheme": False}, "hooks.example.com:8443/paysim/in"),
    ],
)
def test_the_shorter_forms(kwargs: dict[str, bool], expected: str) -> None:
    assert shown_url(SECRET_URL, **kwargs) == expected


def test_an_ipv6_host_keeps_its_brackets_so_the_port_stays_readable() -> None:
    assert shown_url("http://[::1]:8080/hook") == "http://[::1]:8080/hook"
    assert shown_url("http://[fe80::1]/hook", scheme=False, path=False) == "[fe80::1]"


def test_no_port_shows_none() -> None:
    assert shown_url("http://example.com/x") == "http://example.com/x"


@pytest.mark.parametrize("url", ["http://[::1/x", "http://host:99999/x", "http://host:port/x"])
def test_an_unparseable_url_is_never_echoed(url: str) -> None:
    assert shown_url(url) == UNPARSEABLE


def test_the_three_callers_are_its_forms() -> None:
    assert safe_url(SECRET_URL) == "https://hooks.example.com:8443/paysim/in"
    assert safe_url("") == ""
    assert endpoint_of(SECRET_URL) == "hooks.example.com:8443"
    assert describe_url(SECRET_URL) == "https://hooks.example.com:8443"
