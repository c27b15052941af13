"""Training rounds, sans I/O: job specs, the committed transactions and the ledger they build,
the messages of trainers and validators, task selection, and the rounds machine.

See docs/jobs.md for the protocol in prose and :mod:`p2pnode_protocols.rounds.machine` for the
roles.
"""

from .events import (
    Aggregate,
    BadProposal,
    Committed,
    Computed,
    JobApplied,
    MembersSeen,
    Prefetch,
    Resumed,
    RoundPhase,
    Submit,
    Train,
    TrainingDone,
)
from .ledger import Applied, JobState, NodeRecord, RoundSummary, TrainingLedger, quorum_of
from .machine import METRIC_TOLERANCE, RoundsConfig, RoundsMachine
from .messages import (
    Attestation,
    Proposal,
    RoundResult,
    UpdateNotice,
    UpdateRef,
    decode_message,
    decode_result,
    encode_message,
    encode_result,
)
from .selector import Candidate, Selector, select_tasks
from .spec import Capabilities, JobSpec, decode_spec, encode_spec
from .transactions import (
    APP,
    CancelJob,
    CommitRound,
    CreateJob,
    StartRound,
    Task,
    decode_tx,
    encode_tx,
    job_id_of,
)

__all__ = [
    "APP",
    "METRIC_TOLERANCE",
    "Aggregate",
    "Applied",
    "Attestation",
    "BadProposal",
    "CancelJob",
    "Candidate",
    "Capabilities",
    "CommitRound",
    "Committed",
    "Computed",
    "CreateJob",
    "JobApplied",
    "JobSpec",
    "JobState",
    "MembersSeen",
    "NodeRecord",
    "Prefetch",
    "Proposal",
    "Resumed",
    "RoundPhase",
    "RoundResult",
    "RoundSummary",
    "RoundsConfig",
    "RoundsMachine",
    "Selector",
    "StartRound",
    "Submit",
    "Task",
    "Train",
    "TrainingDone",
    "TrainingLedger",
    "UpdateNotice",
    "UpdateRef",
    "decode_message",
    "decode_result",
    "decode_spec",
    "decode_tx",
    "encode_message",
    "encode_result",
    "encode_spec",
    "encode_tx",
    "job_id_of",
    "quorum_of",
    "select_tasks",
]
