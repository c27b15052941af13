"""The learning a round needs, as plain functions over numpy: train a task, aggregate a round.

:class:`JobCompute` is built once per job from its spec (model, data split and shards, rule,
optimizers, schedules, compression) and is what the built-in trainer and every validator call,
in a worker thread. Aggregation is deterministic given the base model blob and the update blobs:
decoding, the rule over inputs in canonical order, the outer optimizer step and the tensor
encoding of the new model are all exact, so every honest validator derives the same model key.
Validation figures (accuracy, loss, per-update scores) go through BLAS and are rounded to six
decimals; validators compare them with ``p2pnode_protocols.rounds.METRIC_TOLERANCE``.

**Verified work.** :meth:`JobCompute.aggregate` also checks the round's fresh updates before the
rule sees them: the spot-checked trainers' tasks are re-run (the trainer's seed is derived from its
node id, so the task is deterministic given the base model, shard, round and spec) and compared
bit for bit; near-duplicate updates (the same top-1% index set, or a relative L2 distance below
``COPY_TOLERANCE``) are copies, and of a group of copies only the one that recomputes is kept.
Where tasks are re-run (``spot_check > 0``, no error feedback), updates far closer to each other
than the round's updates are to their nearest neighbours
(:func:`p2pnode.training.redundancy.near_duplicate_pairs`: the crafted vector that ALIE, IPM and
the min-attacks all send, a mimic's copy) are grouped the same way, so every member is re-run and
those that do not recompute are flagged. Flagged updates stay in the result's update set but out
of the aggregate (they are outliers), and their contribution score is minus the size of what they
alone do to the validation loss (a cheat never earns credit, and a bigger claim costs more).
Neither check can re-run a task under error feedback (the residual is the trainer's own state):
such jobs get copy detection by the lowest node id only, and no spot-checks.

**The validation screen.** With a robust rule (``aggregation.screen = "default"``) the rule
sits behind :class:`p2pnode.training.screening.ScreenedRule`: up to ``f`` updates whose removal
lowers the validation loss are left out, with a BLAS-free loss so that validators agree on the
choice bit for bit, and each screened update's contribution score is its leave-one-out score.

The model blob holds the parameters (``params/<name>``) and the outer optimizer's state
(``opt/...``, e.g. DiLoCo's Nesterov momentum), so a validator that restarts resumes from the
last committed model alone.
"""

from __future__ import annotations

import hashlib
import importlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from p2pnode.training.aggregation import ROBUST_RULE_NAMES, AggregationRule, ClientUpdate, make_rule
from p2pnode.training.attacks import (
    OMNISCIENT_ATTACKS,
    UPDATE_ATTACKS,
    corrupt_update,
    craft_update,
)
from p2pnode.training.compression import Compressor, DecodeError, ErrorFeedback, decode
from p2pnode.training.data import Dataset, load_digits, train_test_split
from p2pnode.training.local import local_sgd, local_train, model_delta
from p2pnode.training.models import Model, make_model, softmax_cross_entropy
from p2pnode.training.optimizers import SGD, Adam, Optimizer, make_optimizer
from p2pnode.training.redundancy import near_duplicate_pairs
from p2pnode.training.schedules import make_schedule
from p2pnode.training.screening import ScreenedRule, validation_loss_fn
from p2pnode.training.sharding import dirichlet_shards, iid_shards
from p2pnode.training.state_dict import ParamSpec, StateDict, flatten, unflatten
from p2pnode.training.sync import BoundedAsync
from p2pnode_protocols.rounds import Flag, JobSpec, RoundResult, UpdateRef

__all__ = [
    "ATTACKS",
    "COPY_TOLERANCE",
    "ComputeError",
    "JobCompute",
    "TrainOutput",
    "job_data",
    "node_seed",
]

ATTACKS = ("", *UPDATE_ATTACKS, *OMNISCIENT_ATTACKS)
#: nats a screened drop must lower the validation loss by (benchmarks/robustness.py).
SCREEN_MARGIN = 0.0
#: updates closer than this (relative L2 distance) are copies of each other.
COPY_TOLERANCE = 1e-3
#: the share of coordinates whose index set (largest magnitudes) identifies an update.
COPY_TOPK = 0.01


def node_seed(node: bytes) -> list[int]:
    """The seed of a node's built-in trainer (what a spot-check re-runs with)."""
    return list(node[-8:])


UPDATE_MEDIA_TYPE = "application/x-p2pnode-update"


class ComputeError(Exception):
    """A job cannot be computed here (a model module not allowed, data missing)."""


def _round6(x: float) -> float:
    return round(float(x), 6) if math.isfinite(x) else 1e9


@dataclass(slots=True)
class TrainOutput:
    update: bytes
    samples: int
    loss: float


@dataclass(slots=True)
class JobCompute:
    job_id: str
    spec: JobSpec
    model: Model
    train: Dataset
    val: Dataset
    shards: list[np.ndarray]
    pspec: ParamSpec
    compressor: Compressor
    use_ef: bool
    #: shard -> this node's error-feedback residual (the trainer's state between rounds).
    feedback: dict[int, ErrorFeedback] = field(default_factory=dict)

    @classmethod
    def build(cls, job_id: str, spec: JobSpec, allowed_modules: Sequence[str] = ()) -> JobCompute:
        lr = spec.learning
        train, val, shards = job_data(spec)
        model = _build_model(lr, train, allowed_modules)
        params = model.init(np.random.default_rng([int(lr["init_seed"]), 2]))
        compressor = Compressor(str(lr["compression"]), ratio=float(lr["ratio"]))
        ef = lr["error_feedback"]
        use_ef = compressor.needs_error_feedback if ef == "default" else bool(ef)
        return cls(
            job_id=job_id,
            spec=spec,
            model=model,
            train=train,
            val=val,
            shards=shards,
            pspec=ParamSpec.of(params),
            compressor=compressor,
            use_ef=use_ef,
        )

    # -- the model blob ----------------------------------------------------------------------------

    def optimizer(self) -> Optimizer:
        lr = self.spec.learning
        if lr["outer"] == "adam":
            return Adam()
        return SGD(momentum=float(lr["outer_momentum"]), nesterov=bool(lr["nesterov"]))

    def initial_tensors(self) -> dict[str, np.ndarray]:
        lr = self.spec.learning
        params = self.model.init(np.random.default_rng([int(lr["init_seed"]), 2]))
        return pack(params, self.optimizer().init(params))

    def split(self, tensors: Mapping[str, np.ndarray]) -> tuple[StateDict, dict[str, Any]]:
        params, state = unpack(tensors)
        if set(params) != set(self.pspec.names):
            raise ComputeError("the model blob does not fit the job's model")
        params = {name: params[name] for name in self.pspec.names}  # the model's own order
        if ParamSpec.of(params) != self.pspec:
            raise ComputeError("the model blob's tensors have other shapes than the job's model")
        return params, state

    # -- trainers --------------------------------------------------------------------------------

    def train_task(
        self,
        base: Mapping[str, np.ndarray],
        round: int,
        shard: int,
        seed: Sequence[int],
        attack: str = "",
        attack_scale: float = 10.0,
    ) -> TrainOutput:
        lr = self.spec.learning
        params, _ = self.split(base)
        data = self.train.subset(self.shards[shard])
        if len(data) == 0:
            raise ComputeError(f"shard {shard} is empty")
        rng = np.random.default_rng([*seed, round, shard])
        schedule = make_schedule(str(lr["local_schedule"]), float(lr["local_lr"]), self.spec.rounds)
        step_lr = schedule(round - 1)
        if lr.get("local_optimizer", "sgd") == "sgd":
            local, loss = local_sgd(
                self.model,
                params,
                data,
                epochs=int(lr["epochs"]),
                batch_size=int(lr["batch_size"]),
                lr=step_lr,
                momentum=float(lr["local_momentum"]),
                rng=rng,
            )
        else:
            local, loss = local_train(
                self.model,
                params,
                data,
                make_optimizer(str(lr["local_optimizer"])),
                epochs=int(lr["epochs"]),
                batch_size=int(lr["batch_size"]),
                lr=step_lr,
                rng=rng,
            )
        delta = model_delta(local, params)
        if attack in OMNISCIENT_ATTACKS:
            delta = self._craft(params, round, shard, seed, delta, attack, attack_scale)
        elif attack:
            delta = corrupt_update(attack, delta, attack_scale, rng)
        if self.use_ef:
            ef = self.feedback.setdefault(shard, ErrorFeedback(self.compressor))
            blob = ef.encode(delta, rng)
        else:
            blob = self.compressor.encode(delta, rng)
        return TrainOutput(update=blob, samples=len(data), loss=float(loss))

    def _craft(
        self,
        params: StateDict,
        round: int,
        shard: int,
        seed: Sequence[int],
        own: np.ndarray,
        attack: str,
        eps: float,
    ) -> np.ndarray:
        """Tests and demos only: an omniscient attacker's update. Commit-reveal keeps it from
        seeing this round's honest updates before it commits, so it recomputes them: the data,
        the shards and the base model are public and every task is deterministic given them
        (what spot-checks rely on). It trains every other shard with its own seed, a sample of
        the same distribution as the honest updates, and crafts from those and its own."""
        rows = [own]
        lr = self.spec.learning
        schedule = make_schedule(str(lr["local_schedule"]), float(lr["local_lr"]), self.spec.rounds)
        for other, idx in enumerate(self.shards):
            if other == shard or len(idx) == 0:
                continue
            local, _ = local_sgd(
                self.model,
                params,
                self.train.subset(idx),
                epochs=int(lr["epochs"]),
                batch_size=int(lr["batch_size"]),
                lr=schedule(round - 1),
                momentum=float(lr["local_momentum"]),
                rng=np.random.default_rng([*seed, round, other]),
            )
            rows.append(model_delta(local, params))
        if len(rows) < 2:  # nothing to hide among: ALIE and the min-attacks send their own
            return craft_update(attack, np.stack(rows), 2, 1, eps=eps)
        f = min(max(1, int(lr["f"])), len(rows) - 1)
        return craft_update(attack, np.stack(rows), len(rows), f, eps=eps)

    def encode_delta(self, delta: np.ndarray, shard: int, rng: np.random.Generator) -> bytes:
        """An external trainer's delta, compressed as the job says (with error feedback)."""
        if delta.shape != (self.pspec.size,):
            raise ComputeError(f"the update has {delta.size} values, the model {self.pspec.size}")
        if self.use_ef:
            return self.feedback.setdefault(shard, ErrorFeedback(self.compressor)).encode(
                delta, rng
            )
        return self.compressor.encode(delta, rng)

    # -- validators ------------------------------------------------------------------------------

    def evaluate(self, params: Mapping[str, np.ndarray]) -> tuple[float, float]:
        logits = self.model.logits(dict(params), self.val.x)
        loss, _ = softmax_cross_entropy(logits, self.val.y)
        acc = float(np.mean(np.argmax(logits, axis=1) == self.val.y))
        return acc, float(loss)

    def aggregate(
        self,
        base: Mapping[str, np.ndarray],
        base_key: str,
        round: int,
        updates: Sequence[tuple[UpdateRef, bytes]],
        shards: Mapping[bytes, int] | None = None,
        spot: Sequence[bytes] = (),
    ) -> tuple[dict[str, np.ndarray], RoundResult]:
        """The new model's tensors and the result (``proposer`` and ``model_key`` left for the
        caller: the key is known once the tensors are stored as a blob). ``shards`` maps the
        nodes of the fresh updates to their shards; ``spot`` names those to re-run."""
        lr = self.spec.learning
        params, opt_state = self.split(base)
        flat = flatten(params)
        inputs: list[ClientUpdate] = []
        refs = sorted(updates, key=lambda p: (p[0].node, p[0].round))
        names: dict[str, bytes] = {}
        broken: list[bytes] = []
        deltas: dict[str, np.ndarray] = {}
        async_w = BoundedAsync(max_staleness=self.spec.staleness, alpha=1.0)
        for ref, data in refs:
            cid = f"{ref.node.hex()}@{ref.round}"
            names[cid] = ref.node
            try:
                delta = decode(data, max_size=self.pspec.size)
            except DecodeError:
                broken.append(ref.node)
                continue
            if delta.shape != (self.pspec.size,) or not np.all(np.isfinite(delta)):
                broken.append(ref.node)
                continue
            factor = async_w.staleness_factor(round - ref.round)
            if factor != 1.0:
                delta = (delta * np.float32(factor)).astype(np.float32)
            deltas[cid] = delta
            inputs.append(ClientUpdate(cid, delta, ref.samples))
        flags = self.verify_updates(base, round, refs, deltas, names, shards or {}, spot)
        flagged = {f.node for f in flags}
        flagged_cids = {f"{n.hex()}@{round}" for n in flagged}
        inputs = [i for i in inputs if i.client_id not in flagged_cids]
        if not inputs:
            raise ComputeError("no update decodes" if not flags else "every update is flagged")
        rule = job_rule(lr)
        screened: dict[bytes, float] = {}
        if isinstance(rule, ScreenedRule):
            agg = rule.aggregate_with(inputs, validation_loss_fn(self.model, params, self.val))
            # The screen's leave-one-out score is the contribution score of a screened update.
            for cid, s in agg.scores.items():
                node = names[cid]
                screened[node] = min(screened.get(node, _round6(s)), _round6(s))
        else:
            agg = rule.aggregate(inputs)
        grads = unflatten(-agg.aggregate, self.pspec)
        outer_lr = make_schedule(
            str(lr["outer_schedule"]), float(lr["outer_lr"]), self.spec.rounds
        )(round - 1)
        new_params, new_state = self.optimizer().step(params, grads, opt_state, outer_lr)
        acc, loss = self.evaluate(new_params)
        _base_acc, base_loss = self.evaluate(params)
        scores: dict[bytes, float] = {}
        for cid, delta in sorted(deltas.items()):
            node = names[cid]
            if node in screened:
                continue
            _, alone = self.evaluate(unflatten(flat + delta, self.pspec))
            s = _round6(base_loss - alone)
            if node in flagged:
                # Not the work it was given (it failed a re-run): what it does to the loss is
                # credit it claims for data it did not train on, so it counts against it.
                s = -abs(s)
            scores[node] = min(scores.get(node, s), s)
        scores.update(screened)
        for node in broken:
            scores[node] = -1e9
        contributors = tuple(sorted({names[c] for c in agg.contributors}))
        outliers = tuple(sorted({names[c] for c in agg.outliers} | set(broken) | flagged))
        contributors = tuple(n for n in contributors if n not in flagged)
        result = RoundResult(
            job=self.job_id,
            round=round,
            base_key=base_key,
            model_key="-",
            updates=tuple(ref for ref, _ in refs),
            contributors=contributors,
            outliers=outliers,
            scores=tuple(sorted(scores.items())),
            accuracy=_round6(acc),
            loss=_round6(loss),
            proposer=b"-",
            flags=flags,
        )
        return pack(new_params, new_state), result

    def rerun(self, base: Mapping[str, np.ndarray], round: int, shard: int, node: bytes) -> bytes:
        """The update ``node``'s built-in trainer sends for this task (no error feedback)."""
        return self.train_task(base, round, shard, node_seed(node)).update

    def verify_updates(
        self,
        base: Mapping[str, np.ndarray],
        round: int,
        refs: Sequence[tuple[UpdateRef, bytes]],
        deltas: Mapping[str, np.ndarray],
        names: Mapping[str, bytes],
        shards: Mapping[bytes, int],
        spot: Sequence[bytes],
    ) -> tuple[Flag, ...]:
        """Spot-checks and copy detection over the round's fresh updates (sorted flags)."""
        fresh = {ref.node: data for ref, data in refs if ref.round == round}
        can_rerun = not self.use_ef
        reruns: dict[bytes, bytes] = {}

        def honest(node: bytes) -> bool | None:
            """Whether node's update recomputes (None: cannot tell)."""
            if not can_rerun or node not in shards or node not in fresh:
                return None
            if node not in reruns:
                reruns[node] = self.rerun(base, round, shards[node], node)
            return reruns[node] == fresh[node]

        flags: dict[bytes, Flag] = {}
        # Copies: group near-duplicates (union-find over pairs), keep the one that recomputes.
        cids = sorted(c for c in deltas if c.endswith(f"@{round}"))
        parent = {c: c for c in cids}

        def root(c: str) -> str:
            while parent[c] != c:
                c = parent[c]
            return c

        k = max(1, int(self.pspec.size * COPY_TOPK))
        tops = {c: frozenset(np.argpartition(-np.abs(deltas[c]), k - 1)[:k].tolist()) for c in cids}
        norms = {c: float(np.linalg.norm(deltas[c].astype(np.float64))) for c in cids}
        for i, a in enumerate(cids):
            for b in cids[i + 1 :]:
                dist = float(np.linalg.norm(deltas[a].astype(np.float64) - deltas[b]))
                near = dist <= COPY_TOLERANCE * max(norms[a], norms[b])
                if near or tops[a] == tops[b]:
                    parent[root(b)] = root(a)
        if can_rerun and self.spec.spot_check > 0 and len(cids) >= 3:
            # Near-duplicates relative to the round's spread (crafted attacks, mimics) are
            # re-run too: only members that do not recompute are flagged, so an honest update
            # that resembles another costs a re-run, never a flag. Only where tasks are re-run
            # at all (spot_check 0 is for external trainers, whose updates do not recompute)
            # and both shards are known: a resemblance alone is no evidence.
            for i, j in near_duplicate_pairs(np.stack([deltas[c] for c in cids])):
                if names[cids[i]] in shards and names[cids[j]] in shards:
                    parent[root(cids[j])] = root(cids[i])
        groups: dict[str, list[bytes]] = {}
        for c in cids:
            groups.setdefault(root(c), []).append(names[c])
        for members in groups.values():
            if len(members) < 2:
                continue
            members.sort()
            verdicts = {m: honest(m) for m in members}
            originals = [m for m in members if verdicts[m]]
            if not originals and all(v is None for v in verdicts.values()):
                originals = [members[0]]  # cannot tell: the lowest node id keeps its update
            for m in members:
                if m in originals:
                    continue
                if originals:
                    flags[m] = Flag(node=m, kind="copy", detail=originals[0].hex())
                else:
                    flags[m] = self._spot_flag(m, reruns)
        for node in sorted(set(spot)):
            if node not in flags and honest(node) is False:
                flags[node] = self._spot_flag(node, reruns)
        return tuple(flags[n] for n in sorted(flags))

    @staticmethod
    def _spot_flag(node: bytes, reruns: Mapping[bytes, bytes]) -> Flag:
        expected = reruns.get(node, b"")
        return Flag(node=node, kind="spot_check", detail=hashlib.sha256(expected).hexdigest())


def job_rule(lr: Mapping[str, Any]) -> AggregationRule | ScreenedRule:
    """The job's rule: ``aggregation.rule`` with ``f`` and ``mixing``, behind the validation
    screen when ``aggregation.screen`` says so (``"default"``: for the robust rules, not for
    FedAvg). Once the screen drops k updates the rule is re-made for ``f - k``."""
    name, f = str(lr["rule"]), int(lr["f"])
    mixing = lr["mixing"]
    mix = None if mixing == "default" else bool(mixing)
    rule = make_rule(name, f=f, mixing=mix)
    screen = lr.get("screen", "default")  # specs from before the key: the default
    if not (name in ROBUST_RULE_NAMES if screen == "default" else bool(screen)):
        return rule

    def remake(dropped: int) -> AggregationRule:
        return make_rule(name, f=max(0, f - dropped), mixing=mix)

    return ScreenedRule(
        rule, max_drop=f, margin=float(lr.get("screen_margin", SCREEN_MARGIN)), remake=remake
    )


def job_data(spec: JobSpec) -> tuple[Dataset, Dataset, list[np.ndarray]]:
    """A job's training split, validation split and shard indices, from its seed alone: what
    every trainer, validator and external trainer derives the same way."""
    lr = spec.learning
    data = load_digits() if lr["data"] == "digits" else _load_path(str(lr["data_path"]))
    split_rng = np.random.default_rng([int(lr["seed"]), 0])
    train, val = train_test_split(data, float(lr["test_fraction"]), split_rng)
    if lr["shard"] == "iid":
        shards = iid_shards(len(train), spec.shards, split_rng)
    else:
        shards = dirichlet_shards(train.y, spec.shards, float(lr["alpha"]), split_rng)
    return train, val, shards


def pack(params: Mapping[str, np.ndarray], state: Mapping[str, Any]) -> dict[str, np.ndarray]:
    out = {f"params/{k}": np.asarray(v) for k, v in params.items()}
    for k, v in sorted(state.items()):
        if isinstance(v, Mapping):
            for name, arr in sorted(v.items()):
                out[f"opt/{k}/{name}"] = np.asarray(arr)
        else:
            out[f"opt/{k}"] = np.asarray(v, dtype=np.int64)
    return out


def unpack(tensors: Mapping[str, np.ndarray]) -> tuple[StateDict, dict[str, Any]]:
    params: StateDict = {}
    state: dict[str, Any] = {}
    for name, arr in tensors.items():
        parts = name.split("/")
        if parts[0] == "params" and len(parts) == 2:
            params[parts[1]] = arr
        elif parts[0] == "opt" and len(parts) == 2:
            state[parts[1]] = int(arr)
        elif parts[0] == "opt" and len(parts) == 3:
            state.setdefault(parts[1], {})[parts[2]] = arr
        else:
            raise ComputeError(f"unexpected tensor {name!r} in a model blob")
    return params, state


def _build_model(lr: Mapping[str, Any], train: Dataset, allowed: Sequence[str]) -> Model:
    name = str(lr["model"])
    n_classes = max(train.num_classes, int(train.y.max()) + 1 if len(train) else 1)
    if name == "mlp":
        return make_model(
            "mlp", in_features=train.num_features, hidden=tuple(lr["hidden"]), num_classes=n_classes
        )
    if name == "softmax":
        return make_model("softmax", in_features=train.num_features, num_classes=n_classes)
    module, _, factory = name.partition(":")
    if module not in allowed:
        raise ComputeError(f"model module {module!r} is not in this node's training.model_modules")
    try:
        fn = getattr(importlib.import_module(module), factory)
    except (ImportError, AttributeError) as exc:
        raise ComputeError(f"cannot load model {name!r}: {exc}") from None
    return fn(in_features=train.num_features, num_classes=n_classes)  # type: ignore[no-any-return]


def _load_path(path: str) -> Dataset:
    try:
        with np.load(path) as f:
            return Dataset(np.asarray(f["x"], dtype=np.float32), np.asarray(f["y"], np.int64))
    except (OSError, KeyError, ValueError) as exc:
        raise ComputeError(f"cannot load data {path!r} (an .npz with x and y): {exc}") from None
