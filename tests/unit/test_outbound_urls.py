"""Every outbound URL goes through one parser; what is malformed or ambiguous is refused with the
field's name, never guessed at."""

from __future__ import annotations

import pytest

from easel.errors import InvalidRequest
from easel.net.urls import parse_url

REFUSED = [
    ("http://[::1:8080/hook", "IPv6"),
    ("http://[::1/x", "IPv6"),
    ("http://::1]/x", "IPv6"),
    ("http://a..example.com/hook", "empty label"),
    ("http://.example.com/hook", "empty label"),
    (f"http://{'a' * 64}.example.com/hook", "at most 63"),
    ("http://example.com\\@evil.test/", "backslashes"),
    ("http://exa mple.com/", "spaces"),
    ("http://example.com/\n", "control"),
    ("http://ex\u007fample.com/", "control"),
    ("http://user:pw@example.com/", "user name"),
    ("http://0x7f000001/", "numeric host"),
    ("http://127.1/", "numeric host"),
    ("http://example.com:99999/", "out of range"),
    ("http://example.com:0/", "port 0"),
    ("ftp://example.com/", "http:// or https://"),
    ("http:///path", "no host"),
    ("http://xn--a.example/", "not a valid domain"),
]


@pytest.mark.parametrize(("url", "why"), REFUSED)
def test_malformed_or_ambiguous_urls_are_refused(url: str, why: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_url(url, "callback_url")
    assert refused.value.param == "callback_url"
    assert refused.value.message.startswith("callback_url must be an http(s) URL")
    assert why in refused.value.message


@pytest.mark.parametrize(
    ("url", "host", "port"),
    [
        ("https://Example.COM/hook?x=1", "example.com", 443),
        ("http://127.0.0.1:8080/", "127.0.0.1", 8080),
        ("http://[::1]:9/", "::1", 9),
        ("https://bücher.example/", "xn--bcher-kva.example", 443),
        ("http://example.com./", "example.com.", 80),
    ],
)
def test_good_urls_parse(url: str, host: str, port: int) -> None:
    parsed = parse_url(url, "webhook_url")
    assert (parsed.host, parsed.port) == (host, port)
