"""The little HTTP/1.1 the web view needs: parse one bounded request head, build a response.

No I/O here (the server reads and writes): a head is parsed whole once ``\\r\\n\\r\\n`` arrived,
and anything this view does not serve is an :class:`HttpError` carrying the status to answer.
One request per connection (``Connection: close``): a browser opens a few, so keep-alive would
buy nothing but state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote

MAX_HEAD = 8192
MAX_HEADERS = 64
# Host names a browser on this machine (or at the end of ``ssh -L``) sends: any other name is a
# page on some web site that made its own name resolve to 127.0.0.1 (DNS rebinding).
LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]")

REASONS = {
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class HttpError(Exception):
    """A request this server refuses, with the status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


def head_complete(buffer: bytes) -> bool:
    return b"\r\n\r\n" in buffer


def parse_head(buffer: bytes) -> Request:
    """Parse a request head (everything up to the blank line; a body is never read)."""
    head, sep, _ = buffer.partition(b"\r\n\r\n")
    if not sep:
        if len(buffer) >= MAX_HEAD:
            raise HttpError(431, f"request head longer than {MAX_HEAD} bytes")
        raise HttpError(400, "incomplete request head")
    if len(head) > MAX_HEAD:
        raise HttpError(431, f"request head longer than {MAX_HEAD} bytes")
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        raise HttpError(400, "request head is not ASCII") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise HttpError(400, "malformed request line")
    method, target, _ = parts
    if len(lines) - 1 > MAX_HEADERS:
        raise HttpError(431, f"more than {MAX_HEADERS} header lines")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise HttpError(400, "malformed header line")
        headers[name.lower()] = value.strip()
    if not target.startswith("/"):
        raise HttpError(400, "request target must be a path")
    path, _, qs = target.partition("?")
    try:
        query = dict(parse_qsl(qs, keep_blank_values=True, strict_parsing=False, max_num_fields=16))
    except ValueError:
        raise HttpError(400, "too many query parameters") from None
    return Request(method=method, path=unquote(path), query=query, headers=headers)


def check_host(request: Request) -> None:
    """Refuse a Host that is not this machine's loopback (403): see :data:`LOCAL_HOSTS`."""
    host = request.headers.get("host")
    if host is None:
        raise HttpError(400, "no Host header")
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    if name.lower() not in LOCAL_HOSTS:
        raise HttpError(403, f"Host {host!r} is not this machine's loopback")


def int_query(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HttpError(400, f"{name} must be an integer") from None
    if not lo <= value <= hi:
        raise HttpError(400, f"{name} must be in [{lo}, {hi}]")
    return value


# Everything the page needs comes from this daemon: the policy makes a browser refuse anything
# else (no CDN can creep in), and no page elsewhere may frame this one.
SECURITY_HEADERS = (
    ("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
)


def response_head(
    status: int, content_type: str, length: int | None, extra: tuple[tuple[str, str], ...] = ()
) -> bytes:
    """Status line and headers; ``length`` None for a stream (server-sent events)."""
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}", f"Content-Type: {content_type}"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    lines += [f"{k}: {v}" for k, v in (*SECURITY_HEADERS, *extra)]
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def response(status: int, body: bytes, content_type: str) -> bytes:
    return response_head(status, content_type, len(body)) + body


def error_response(err: HttpError) -> bytes:
    return response(err.status, f"{err}\n".encode(), "text/plain; charset=utf-8")
