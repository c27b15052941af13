"""A signed DHT record as a holder accepts it (``p2pnode_protocols.dht.records.decode_record``
then the node's ``Validators``: kv, prov and ptr namespaces, the libp2p signature check); what
a ``store`` request or a ``find_value`` answer carries. Allowed: ``RecordInvalid``."""

from __future__ import annotations

from tests.fuzz.harness import Target, instrumented

with instrumented("p2pnode_protocols.dht", "p2pnode_protocols.blobs", "p2pnode.network.signing"):
    from p2pnode.network.signing import verify
    from p2pnode_protocols.blobs.pointers import PointerValidator
    from p2pnode_protocols.dht.errors import RecordInvalid
    from p2pnode_protocols.dht.records import RECORD_OVERHEAD, Record, decode_record
    from p2pnode_protocols.dht.validators import KvValidator, Validators

MAX_VALUE = 65536  # dht.max_value_size's default


class _ProviderKeys:
    """As ``p2pnode.network.dht.service._ProviderKeyValidator`` (that module needs a host)."""

    def validate(self, record: Record) -> None:
        raise RecordInvalid("provider keys hold provider entries, not records")


_VALIDATORS = Validators(verify)
_VALIDATORS.register("kv", KvValidator(MAX_VALUE))
_VALIDATORS.register("prov", _ProviderKeys())
_VALIDATORS.register("ptr", PointerValidator())


def decode(data: bytes) -> Record:
    record = decode_record(data, max_size=MAX_VALUE + RECORD_OVERHEAD)
    _VALIDATORS.validate(record)
    return record


def seeds() -> list[bytes]:
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.peer.id import ID

    from p2pnode.network.signing import sign_record
    from p2pnode_protocols.blobs.cid import manifest_cid

    kp = create_new_key_pair(b"\x07" * 32)
    me = ID.from_pubkey(kp.public_key).to_base58()
    blob = manifest_cid(b"manifest").encode()
    records = [
        sign_record(kp, key="/p2pnode/kv/a", value=b"hello", seq=1, ttl=3600.0, publisher=me),
        sign_record(kp, key=f"/p2pnode/ptr/{me}/m", value=blob, seq=2, ttl=60, publisher=me),
        sign_record(kp, key="/p2pnode/prov/x", value=b"", seq=3, ttl=60.0, publisher=me),
    ]
    return [r.encode() for r in records]


TARGET = Target(
    name="dht_record",
    decode=decode,
    allowed=(RecordInvalid,),
    seeds=seeds,
    cbor_at=0,
    doc="`decode_record` and the node's namespace validators and signature check",
)
