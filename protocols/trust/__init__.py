"""Trust in an open swarm, sans I/O: the ledger of balances, stakes, rewards and penalties,
evidence of misbehaviour, governance proposals and votes, and the admission policy.

See docs/trust.md for the mechanisms and the threat model, :mod:`.ledger` for the rules.
"""

from .accounts import Account, Entry, Reputation
from .evidence import ATTESTED_KINDS, EvidenceRecord, check_equivocation, evidence_id
from .governance import ProposalState, boundary_after, check_change
from .ledger import TrustLedger
from .params import DEFAULTS, SPECS, UNIT, check_param
from .transactions import (
    APP,
    KINDS,
    Accuse,
    Propose,
    Stake,
    Tick,
    Transfer,
    TrustTx,
    Unstake,
    Vote,
    decode_tx,
    encode_tx,
    proposal_id,
    sign_tx,
    signing_payload,
    verify_tx,
)

__all__ = [
    "APP",
    "ATTESTED_KINDS",
    "DEFAULTS",
    "KINDS",
    "SPECS",
    "UNIT",
    "Account",
    "Accuse",
    "Entry",
    "EvidenceRecord",
    "ProposalState",
    "Propose",
    "Reputation",
    "Stake",
    "Tick",
    "Transfer",
    "TrustLedger",
    "TrustTx",
    "Unstake",
    "Vote",
    "boundary_after",
    "check_change",
    "check_equivocation",
    "check_param",
    "decode_tx",
    "encode_tx",
    "evidence_id",
    "proposal_id",
    "sign_tx",
    "signing_payload",
    "verify_tx",
]
