"""IPC error codes and the typed exceptions the client raises for them.

Every error reply is ``{"id": <request id or None>, "error": {"code": C, "message": M}}``.
The codes are stable API (documented in docs/ipc.md); messages are for people.
"""

from __future__ import annotations


class IpcError(Exception):
    """Base of every error the client raises. ``code`` is the wire code."""

    code = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class DaemonNotRunning(IpcError):
    """No daemon answers on the socket (not started, or stopped)."""

    code = "not_running"


class BadRequest(IpcError):
    """The frame was not a valid request (not CBOR, not a map, no method)."""

    code = "bad_request"


class FrameTooLarge(IpcError):
    """A frame exceeded the daemon's ``ipc.max_frame``; the daemon closes the connection."""

    code = "too_large"


class UnknownMethod(IpcError):
    code = "unknown_method"


class InvalidParams(IpcError):
    """A parameter is missing, of the wrong type, or out of range."""

    code = "invalid_params"


class NotFound(IpcError):
    """The key, peer or record does not exist (or could not be found in time)."""

    code = "not_found"


class NetworkError(IpcError):
    """The operation needed peers and could not reach them."""

    code = "network"


class NoSpace(IpcError):
    """The daemon's disk is full; the message names the data dir and its free space."""

    code = "no_space"


class CollectiveFailed(IpcError):
    """A collective operation (or a group's forming) failed on this member."""

    code = "collective_failed"


class GroupChangedError(CollectiveFailed):
    """The group changed since the caller last looked: refresh the group and retry."""

    code = "group_changed"


class Rejected(IpcError):
    """The transaction was committed but the ledger refused it (the message says why); it
    changed nothing."""

    code = "rejected"


class InternalError(IpcError):
    """A bug in the daemon; its log has the details."""

    code = "internal"


ERRORS: dict[str, type[IpcError]] = {
    cls.code: cls
    for cls in (
        DaemonNotRunning,
        BadRequest,
        FrameTooLarge,
        UnknownMethod,
        InvalidParams,
        NotFound,
        NetworkError,
        NoSpace,
        CollectiveFailed,
        GroupChangedError,
        Rejected,
        InternalError,
    )
}


def error_from_wire(code: object, message: object) -> IpcError:
    cls = ERRORS.get(code, InternalError) if isinstance(code, str) else InternalError
    return cls(str(message))
