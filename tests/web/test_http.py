"""The web view's request parsing (p2pnode/web/http.py): heads whole, bad ones refused with the
status they deserve, and no input at all makes it raise anything but an HttpError."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pnode.web.http import (
    MAX_HEAD,
    HttpError,
    check_host,
    int_query,
    parse_head,
    response_head,
)


def _head(line: str = "GET / HTTP/1.1", host: str = "127.0.0.1:8080", *extra: str) -> bytes:
    return ("\r\n".join([line, f"Host: {host}", *extra]) + "\r\n\r\n").encode()


def test_a_get_is_parsed_with_its_query_and_headers() -> None:
    req = parse_head(_head("GET /api/log?limit=5&x= HTTP/1.1", "localhost:1", "Accept: */*"))
    assert (req.method, req.path) == ("GET", "/api/log")
    assert req.query == {"limit": "5", "x": ""}
    assert req.headers["accept"] == "*/*"
    assert int_query(req, "limit", 50, 1, 256) == 5
    assert int_query(req, "other", 50, 1, 256) == 50
    check_host(req)


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET / HTTP/1.1\r\nHost: a", 400),  # no blank line
        (b"GET /\r\n\r\n", 400),  # HTTP/0.9
        (b"GET / HTTP/2\r\n\r\n", 400),
        (b"GET http://x/ HTTP/1.1\r\n\r\n", 400),  # absolute form
        (b"GET / HTTP/1.1\r\nno colon\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n\xff: x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nX: " + b"a" * MAX_HEAD + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nX: " + b"a" * MAX_HEAD, 431),
        (b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 100 + b"\r\n", 431),
    ],
)
def test_bad_heads_are_refused_with_a_status(raw: bytes, status: int) -> None:
    with pytest.raises(HttpError) as err:
        parse_head(raw)
    assert err.value.status == status


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.0.0.1:9", "localhost:80", "LOCALHOST", "[::1]", "[::1]:8"]
)
def test_loopback_hosts_are_served(host: str) -> None:
    check_host(parse_head(_head(host=host)))


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:8080", "127.0.0.1.nip.io", "10.0.0.1"]
)
def test_other_hosts_are_refused_against_dns_rebinding(host: str) -> None:
    with pytest.raises(HttpError) as err:
        check_host(parse_head(_head(host=host)))
    assert err.value.status == 403


def test_query_integers_are_bounded() -> None:
    for raw in ("0", "257", "x", "-1"):
        with pytest.raises(HttpError) as err:
            int_query(parse_head(_head(f"GET /?limit={raw} HTTP/1.1")), "limit", 50, 1, 256)
        assert err.value.status == 400


def test_a_stream_head_has_no_length_and_forbids_other_origins() -> None:
    head = response_head(200, "text/event-stream", None).decode()
    assert "Content-Length" not in head and head.endswith("\r\n\r\n")
    assert "Content-Security-Policy: default-src 'self'" in head


@settings(max_examples=200)
@given(st.binary(max_size=MAX_HEAD + 64))
def test_any_bytes_parse_or_raise_http_error(raw: bytes) -> None:
    try:
        req = parse_head(raw)
    except HttpError as err:
        assert 400 <= err.status < 500
    else:
        assert req.path.startswith("/")


@settings(max_examples=100)
@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=200))
def test_any_printable_target_parses_or_raises_http_error(target: str) -> None:
    try:
        parse_head(_head(f"GET /{target} HTTP/1.1"))
    except HttpError as err:
        assert err.status in (400, 431)
