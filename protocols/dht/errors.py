"""Errors of the DHT record layer, split by blame as in h11."""


class DhtProtocolError(Exception):
    """Base class; never raised itself."""


class LocalProtocolError(DhtProtocolError):
    """Our caller asked for something illegal (a bad key, an oversized value)."""


class RemoteProtocolError(DhtProtocolError):
    """A peer sent something illegal. ``reply_hint`` is the error text to send back."""

    def __init__(self, message: str, *, reply_hint: str | None = None) -> None:
        super().__init__(message)
        self.reply_hint = reply_hint or message


class RecordInvalid(LocalProtocolError):
    """A record fails its namespace's validator (raised for local and remote records alike;
    the boundary that read it from the wire turns it into a RemoteProtocolError)."""
