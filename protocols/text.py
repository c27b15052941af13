"""Peer values in error messages, safely: an error raised for bad input must not fail itself.

``f"{value!r}"`` of a peer's value can raise: Python refuses to turn an int of more than 4300
digits into text (``ValueError``, a guard against quadratic conversion), and a CBOR bignum of
2 KB is such an int. :func:`brief` never raises and stays short.
"""

from __future__ import annotations

__all__ = ["brief"]


def brief(value: object, limit: int = 80) -> str:
    """A short, safe ``repr`` of ``value`` for an error message."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"<int of {value.bit_length()} bits>"
    try:
        text = repr(value)
    except Exception:  # a value whose repr fails (an int too long to write out inside it)
        return f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."
