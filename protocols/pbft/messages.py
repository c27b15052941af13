"""PBFT wire messages: frozen, slotted, keyword-only dataclasses that validate on construction.

Names follow Castro & Liskov (OSDI '99, TOCS 2002). The paper's COMMIT message is ``CommitVote``
here, so that ``Commit`` can name the effect "this entry is committed". Every message that a
replica or client sends carries its ``sender`` (a libp2p peer id, raw bytes) and a ``signature``
by that peer's key over the canonical CBOR of the message without its signature
(``codec.signing_bytes``). Construction checks types and bounds only; signatures, digests and
quorums are checked by the machine and ``certificates``, which know the committee.

A bad value raises ``LocalProtocolError``; ``codec.decode`` turns that into a
``RemoteProtocolError`` because there the bad value came from a peer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import LocalProtocolError

__all__ = [
    "DIGEST_BYTES",
    "MAX_BATCH",
    "MAX_COMMITTEE",
    "MAX_ENTRIES",
    "MAX_ID_BYTES",
    "MAX_OP_BYTES",
    "MAX_PROOFS",
    "MAX_SIG_BYTES",
    "MAX_SNAPSHOT_BYTES",
    "Certificate",
    "CertifiedEntry",
    "Checkpoint",
    "CommitVote",
    "Entry",
    "Message",
    "NewView",
    "PrePrepare",
    "Prepare",
    "PreparedProof",
    "Request",
    "StableCheckpoint",
    "StateReply",
    "Status",
    "ViewChange",
]

#: sha256 digests everywhere.
DIGEST_BYTES = 32
#: An Ed25519 peer id is 38 bytes; other key types stay well under this.
MAX_ID_BYTES = 64
#: Ed25519 signatures are 64 bytes; leave room for other key types.
MAX_SIG_BYTES = 128
#: One transaction's encoded size.
MAX_OP_BYTES = 64 * 1024
#: Requests in one pre-prepare.
MAX_BATCH = 256
#: Validators in a committee (so votes in one certificate).
MAX_COMMITTEE = 256
#: Prepared proofs in a view change, pre-prepares in a new view, checkpoint votes in a proof:
#: bounded by the sequence window, which config keeps far below this.
MAX_PROOFS = 1024
#: Certified entries in one state reply.
MAX_ENTRIES = 256
#: One state snapshot (the replicated state machine's canonical encoding).
MAX_SNAPSHOT_BYTES = 4 * 1024 * 1024

_U64 = 2**64 - 1


def _bad(msg: str) -> LocalProtocolError:
    return LocalProtocolError(msg)


def _uint(name: str, value: object, *, low: int = 0) -> None:
    # bool is an int subclass; a True sequence number is a bug, not a 1.
    if type(value) is not int or not low <= value <= _U64:
        raise _bad(f"{name} must be an int in [{low}, 2**64), got {value!r}")


def _bytes(name: str, value: object, *, max_len: int, exact: int | None = None) -> None:
    if type(value) is not bytes:
        raise _bad(f"{name} must be bytes, got {type(value).__name__}")
    if exact is not None and len(value) != exact:
        raise _bad(f"{name} must be {exact} bytes, got {len(value)}")
    if len(value) > max_len:
        raise _bad(f"{name} is {len(value)} bytes, more than {max_len}")


def _tuple_of(name: str, value: object, kind: type, *, max_len: int) -> None:
    if type(value) is not tuple:
        raise _bad(f"{name} must be a tuple, got {type(value).__name__}")
    if len(value) > max_len:
        raise _bad(f"{name} has {len(value)} items, more than {max_len}")
    for item in value:
        if type(item) is not kind:
            raise _bad(f"{name} items must be {kind.__name__}, got {type(item).__name__}")


def _short(b: bytes) -> str:
    # Peer ids share a 6-byte multihash prefix; the tail tells them apart in a repr.
    return b[-4:].hex()


class Message:
    """Empty base of every wire message (as h11's ``Event``)."""

    __slots__ = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Request(Message):
    """A client's signed transaction. ``(client, request_id)`` names it for de-duplication."""

    client: bytes
    request_id: int
    op: bytes
    signature: bytes = field(default=b"", repr=False)

    def __post_init__(self) -> None:
        _bytes("client", self.client, max_len=MAX_ID_BYTES)
        _uint("request_id", self.request_id, low=1)
        _bytes("op", self.op, max_len=MAX_OP_BYTES)
        _bytes("signature", self.signature, max_len=MAX_SIG_BYTES)

    @property
    def sender(self) -> bytes:
        return self.client

    def __repr__(self) -> str:
        return f"Request(client={_short(self.client)}, id={self.request_id}, op={self.op[:16]!r})"


@dataclass(frozen=True, slots=True, kw_only=True)
class PrePrepare(Message):
    """The primary of ``view`` assigns ``seq`` to ``batch`` (whose digest is ``digest``)."""

    view: int
    seq: int
    digest: bytes
    batch: tuple[Request, ...]
    sender: bytes
    #: The committee epoch the message belongs to: never counted in another epoch.
    epoch: int = 0
    signature: bytes = field(default=b"", repr=False)

    def __post_init__(self) -> None:
        _uint("epoch", self.epoch)
        _uint("view", self.view)
        _uint("seq", self.seq, low=1)
        _bytes("digest", self.digest, max_len=DIGEST_BYTES, exact=DIGEST_BYTES)
        _tuple_of("batch", self.batch, Request, max_len=MAX_BATCH)
        _bytes("sender", self.sender, max_len=MAX_ID_BYTES)
        _bytes("signature", self.signature, max_len=MAX_SIG_BYTES)

    def __repr__(self) -> str:
        return (
            f"PrePrepare(v={self.view}, n={self.seq}, d={self.digest[:3].hex()}, "
            f"batch={len(self.batch)}, from={_short(self.sender)})"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Prepare(Message):
    """A backup agrees that ``digest`` holds ``seq`` in ``view``."""

    view: int
    seq: int
    digest: bytes
    sender: bytes
    #: The committee epoch the message belongs to: never counted in another epoch.
    epoch: int = 0
    signature: bytes = field(default=b"", repr=False)

    def __post_init__(self) -> None:
        _uint("epoch", self.epoch)
        _uint("view", self.view)
        _uint("seq", self.seq, low=1)
        _bytes("digest", self.digest, max_len=DIGEST_BYTES, exact=DIGEST_BYTES)
        _bytes("sender", self.sender, max_len=MAX_ID_BYTES)
        _bytes("signature", self.signature, max_len=MAX_SIG_BYTES)

    def __repr__(self) -> str:
        return (
            f"Prepare(v={self.view}, n={self.seq}, d={self.digest[:3].hex()}, "
            f"from={_short(self.sender)})"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class CommitVote(Message):
    """The paper's COMMIT: the sender has prepared ``digest`` at ``seq`` in ``view``."""

    view: int
    seq: int
    digest: bytes
    sender: bytes
    #: The committee epoch the message belongs to: never counted in another epoch.
    epoch: int = 0
    signature: bytes = field(default=b"", repr=False)

    def __post_init__(self) -> None:
        _uint("epoch", self.epoch)
        _uint("view", self.view)
        _uint("seq", self.seq, low=1)
        _bytes("digest", self.digest, max_len=DIGEST_BYTES, exact=DIGEST_BYTES)
        _bytes("sender", self.sender, max_len=MAX_ID_BYTES)
        _bytes("signature", self.signature, max_len=MAX_SIG_BYTES)

    def __repr__(self) -> str:
        return (
            f"CommitVote(v={self.view}, n={self.seq}, d={self.digest[:3].hex()}, "
            f"from={_short(self.sender)})"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Checkpoint(Message):
    """The sender's replicated state after executing ``seq`` hashes to ``state_digest``."""

    seq: int
    state_digest: bytes
    sender: bytes
    #: The committee epoch the message belongs to: never counted in another epoch.
    epoch: int = 0
    signature: bytes = field(default=b"", repr=False)

    def __post_init__(self) -> None:
        _uint("epoch", self.epoch)
        _uint("seq", self.seq)
        _bytes("state_digest", self.state_digest, max_len=DIGEST_BYTES, exact=DIGEST_BYTES)
        _bytes("sender", self.sender, max_len=MAX_ID_BYTES)
        _bytes("signature", self.signature, max_len=MAX_SIG_BYTES)

    def __repr__(self) -> str:
        return (
            f"Checkpoint(n={self.seq}, d={self.state_digest[:3].hex()}, from={_short(self.sender)})"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class PreparedProof:
    """A pre-prepare and 2f matching prepares from distinct backups (the paper's P set item)."""

    pre_prepare: PrePrepare
    prepares: tuple[Prepare, ...]

    def __post_init__(self) -> None:
        if type(self.pre_prepare) is not PrePrepare:
            raise _bad("pre_prepare must be a PrePrepare")
        _tuple_of("prepares", self.prepares, Prepare, max_len=MAX_COMMITTEE)


@dataclass(frozen=True, slots=True, kw_only=True)
class ViewChange(Message):
    """The sender moves to ``new_view``: its stable checkpoint and what it prepared above it."""

    new_view: int
    stable_seq: int
    checkpoint_proof: tuple[Checkpoint, ...]
    prepared: tuple[PreparedProof, ...]
    sender: bytes
    #: The committee epoch the message belongs to: never counted in another epoch.
    epoch: int = 0
    signature: bytes = field(default=b"", repr=False)

    def __post_init__(self) -> None:
        _uint("epoch", self.epoch)
        _uint("new_view", self.new_view, low=1)
        _uint("stable_seq", self.stable_seq)
        _tuple_of("checkpoint_proof", self.checkpoint_proof, Checkpoint, max_len=MAX_COMMITTEE)
        _tuple_of("prepared", self.prepared, PreparedProof, max_len=MAX_PROOFS)
        _bytes("sender", self.sender, max_len=MAX_ID_BYTES)
        _bytes("signature", self.signature, max_len=MAX_SIG_BYTES)

    def __repr__(self) -> str:
        seqs = [p.pre_prepare.seq for p in self.prepared]
        return (
            f"ViewChange(v={self.new_view}, h={self.stable_seq}, prepared={seqs}, "
            f"from={_short(self.sender)})"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class NewView(Message):
    """The new primary's proof (2f+1 view changes) and the pre-prepares it derived from them."""

    view: int
    view_changes: tuple[ViewChange, ...]
    pre_prepares: tuple[PrePrepare, ...]
    sender: bytes
    #: The committee epoch the message belongs to: never counted in another epoch.
    epoch: int = 0
    signature: bytes = field(default=b"", repr=False)

    def __post_init__(self) -> None:
        _uint("epoch", self.epoch)
        _uint("view", self.view, low=1)
        _tuple_of("view_changes", self.view_changes, ViewChange, max_len=MAX_COMMITTEE)
        _tuple_of("pre_prepares", self.pre_prepares, PrePrepare, max_len=MAX_PROOFS)
        _bytes("sender", self.sender, max_len=MAX_ID_BYTES)
        _bytes("signature", self.signature, max_len=MAX_SIG_BYTES)

    def __repr__(self) -> str:
        return (
            f"NewView(v={self.view}, vcs={len(self.view_changes)}, "
            f"pps={[p.seq for p in self.pre_prepares]}, from={_short(self.sender)})"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Status(Message):
    """Periodic "where am I": lets peers resend what the sender lacks (view, entries, state)."""

    view: int
    in_view_change: bool
    executed_seq: int
    stable_seq: int
    sender: bytes
    #: The committee epoch the message belongs to: never counted in another epoch.
    epoch: int = 0
    signature: bytes = field(default=b"", repr=False)

    def __post_init__(self) -> None:
        _uint("epoch", self.epoch)
        _uint("view", self.view)
        if type(self.in_view_change) is not bool:
            raise _bad("in_view_change must be a bool")
        _uint("executed_seq", self.executed_seq)
        _uint("stable_seq", self.stable_seq)
        _bytes("sender", self.sender, max_len=MAX_ID_BYTES)
        _bytes("signature", self.signature, max_len=MAX_SIG_BYTES)


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    """One log entry: a batch of requests at ``seq``, named by ``digest``."""

    seq: int
    digest: bytes
    batch: tuple[Request, ...]

    def __post_init__(self) -> None:
        _uint("seq", self.seq, low=1)
        _bytes("digest", self.digest, max_len=DIGEST_BYTES, exact=DIGEST_BYTES)
        _tuple_of("batch", self.batch, Request, max_len=MAX_BATCH)


@dataclass(frozen=True, slots=True, kw_only=True)
class Certificate:
    """2f+1 commit votes from distinct validators for one (view, seq, digest)."""

    votes: tuple[CommitVote, ...]

    def __post_init__(self) -> None:
        _tuple_of("votes", self.votes, CommitVote, max_len=MAX_COMMITTEE)


@dataclass(frozen=True, slots=True, kw_only=True)
class CertifiedEntry:
    """A committed entry with the certificate that any node can check."""

    entry: Entry
    certificate: Certificate

    def __post_init__(self) -> None:
        if type(self.entry) is not Entry or type(self.certificate) is not Certificate:
            raise _bad("CertifiedEntry needs an Entry and a Certificate")


@dataclass(frozen=True, slots=True, kw_only=True)
class StableCheckpoint:
    """A snapshot of the replicated state at ``seq`` and 2f+1 checkpoint votes for its digest."""

    seq: int
    snapshot: bytes
    proof: tuple[Checkpoint, ...]

    def __post_init__(self) -> None:
        _uint("seq", self.seq)
        _bytes("snapshot", self.snapshot, max_len=MAX_SNAPSHOT_BYTES)
        _tuple_of("proof", self.proof, Checkpoint, max_len=MAX_COMMITTEE)


@dataclass(frozen=True, slots=True, kw_only=True)
class StateReply(Message):
    """State transfer: an optional stable checkpoint, then certified entries above it."""

    checkpoint: StableCheckpoint | None
    entries: tuple[CertifiedEntry, ...]
    sender: bytes
    #: The committee epoch the message belongs to: never counted in another epoch.
    epoch: int = 0
    signature: bytes = field(default=b"", repr=False)

    def __post_init__(self) -> None:
        _uint("epoch", self.epoch)
        if self.checkpoint is not None and type(self.checkpoint) is not StableCheckpoint:
            raise _bad("checkpoint must be a StableCheckpoint or None")
        _tuple_of("entries", self.entries, CertifiedEntry, max_len=MAX_ENTRIES)
        _bytes("sender", self.sender, max_len=MAX_ID_BYTES)
        _bytes("signature", self.signature, max_len=MAX_SIG_BYTES)

    def __repr__(self) -> str:
        cp = None if self.checkpoint is None else self.checkpoint.seq
        seqs = [e.entry.seq for e in self.entries]
        return f"StateReply(checkpoint={cp}, entries={seqs}, from={_short(self.sender)})"
