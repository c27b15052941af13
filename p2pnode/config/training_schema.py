"""The ``training.*`` settings: how this node takes part in training jobs (docs/jobs.md)."""

from __future__ import annotations

from p2pnode.config.setting import Setting, _range

__all__ = ["TRAINING_SCHEMA"]

#: training.attack's values (p2pnode.training.attacks has the update attacks; config stays light).
_ATTACKS = (
    "",
    "sign_flip",
    "scaled",
    "gaussian",
    "alie",
    "ipm",
    "min_max",
    "min_sum",
    "mimic",
    "replay",
    "copy",
)

TRAINING_SCHEMA: tuple[Setting, ...] = (
    Setting(
        "training.slots",
        int,
        2,
        "Training tasks this node runs at once (a task is one job's round on one data shard).",
        _range(0, 64),
    ),
    Setting(
        "training.start_timeout",
        float,
        3.0,
        "Seconds a validator has to get a round's tasks committed before the next one tries.",
        _range(0.1, 600),
    ),
    Setting(
        "training.result_timeout",
        float,
        5.0,
        "Seconds a validator has, once a round's updates are in, to get its result committed "
        "before the next validator proposes.",
        _range(0.1, 3600),
    ),
    Setting(
        "training.fetch_timeout",
        float,
        30.0,
        "Seconds to fetch a round's model or an update before the task or the aggregation fails.",
        _range(0.1, 3600),
    ),
    Setting(
        "training.model_modules",
        list,
        [],
        "Python modules this node lets jobs load user models from (model.kind = "
        "'module:factory'); a job naming another module is refused here.",
    ),
    Setting(
        "training.attack",
        str,
        "",
        "For demonstrations and tests only: make this node's built-in trainer send a corrupted "
        "update (sign_flip, scaled or gaussian), an update crafted to hide among the honest "
        "ones of the round, which it recomputes from the public data and shards (alie, ipm, "
        "min_max, min_sum or mimic), its update of an earlier round (replay), or a copy of "
        "another trainer's revealed update (copy; the node must be a validator to see one) "
        "instead of its own.",
        lambda v: (
            None if v in _ATTACKS else "must be '' or one of " + ", ".join(a for a in _ATTACKS if a)
        ),
    ),
    Setting(
        "training.attack_scale",
        float,
        10.0,
        "How strong training.attack is (the factor of sign_flip and scaled, the noise of "
        "gaussian, epsilon of ipm).",
        _range(0, 1e6),
    ),
    Setting(
        "training.delay",
        float,
        0.0,
        "For tests only: seconds the built-in trainer waits before it reports an update (a slow "
        "trainer, for deadlines and bounded staleness).",
        _range(0, 3600),
    ),
    Setting(
        "training.byzantine_proposer",
        bool,
        False,
        "For tests only: when this validator proposes a round's result, it perturbs the new model "
        "(a wrong aggregate, which the other validators must refuse).",
    ),
    Setting(
        "training.censor",
        bool,
        False,
        "For tests only: when this validator proposes a round's result, it leaves out one "
        "trainer's update (censorship, which the other validators must refuse).",
    ),
    Setting(
        "training.flood",
        int,
        0,
        "For tests only: this node sends each of its update notices this many extra times (a "
        "flood, which the validators' rate limit must drop).",
        _range(0, 100000),
    ),
    Setting(
        "training.unsolicited",
        bool,
        False,
        "For tests only: this node trains every round it was not given a task of (shard 0) and "
        "submits the update anyway (which the validators must drop).",
    ),
    Setting(
        "training.max_notices_per_minute",
        int,
        600,
        "Update notices and commitments a validator takes from one peer per minute; the excess "
        "is dropped and counted (rate_limited in rounds.status).",
        _range(0, 1000000),
    ),
)
