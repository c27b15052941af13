"""In-process federated training on the shipped digits: the learning library end to end.

N clients hold shards of the training set (IID, or Dirichlet non-IID with concentration
``alpha``). Each round every client trains the global model locally, sends its delta through the
chosen compression (with error feedback for the sparsifiers), the chosen aggregation rule combines
the decoded updates in canonical order, and a server optimizer applies the result. Attackers
replace their update (sign flip, scaling, Gaussian noise) or poison their data (label flip). A
centralized run of the same model, on the pooled shards for the same number of epochs, is the
yardstick. Every random choice flows from ``--seed``, so a run is reproducible.

    python -m p2pnode_simulations.federated --clients 8 --rounds 20 --alpha 0.5 --model mlp \\
        --rule trimmed_mean --attackers 2 --attack sign_flip --attack-scale 10

writes ``report.md`` (a table per round) and ``accuracy.png`` (accuracy per round) to ``--out``
and ends with the line ``accuracy=<float> centralized=<float>``.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from p2pnode.training.aggregation import (
    RULE_NAMES,
    AggregationRule,
    Bucketing,
    ClientUpdate,
    NearestNeighborMixing,
    make_rule,
)
from p2pnode.training.attacks import OMNISCIENT_ATTACKS, corrupt_update, craft_update
from p2pnode.training.compression import COMPRESSION_KINDS, Compressor, ErrorFeedback, decode
from p2pnode.training.data import Dataset, load_digits, train_test_split
from p2pnode.training.local import local_sgd, model_delta
from p2pnode.training.models import Model, accuracy, make_model
from p2pnode.training.optimizers import make_optimizer
from p2pnode.training.schedules import make_schedule
from p2pnode.training.screening import ScreenedRule, validation_loss_fn
from p2pnode.training.sharding import dirichlet_shards, iid_shards
from p2pnode.training.state_dict import ParamSpec, StateDict, unflatten
from p2pnode_simulations.plots import Series, accuracy_chart

logger = logging.getLogger(__name__)

ATTACKS = ("sign_flip", "scaled", "gaussian", "label_flip", *OMNISCIENT_ATTACKS)


@dataclass(frozen=True, slots=True)
class FederatedConfig:
    """Everything that defines a run. ``alpha=None`` means IID shards."""

    clients: int = 8
    rounds: int = 20
    alpha: float | None = 0.5
    model: str = "mlp"
    hidden: tuple[int, ...] = (128,)
    rule: str = "fedavg"
    #: Byzantine inputs the rule is configured for; None means max(1, attackers).
    byzantine: int | None = None
    clip_norm: float | None = None
    #: nearest-neighbour mixing before the rule (see aggregation.make_rule): None means the
    #: library default, on for the robust rules and off for FedAvg.
    mixing: bool | None = None
    compression: str = "none"
    ratio: float = 0.01
    #: how the sparsifiers store kept values: float16 (the default) or float32
    sparse_values: str = "float16"
    error_feedback: bool | None = None  # None: on for the sparsifiers only
    optimizer: str = "sgd"
    server_lr: float = 1.0
    server_momentum: float = 0.0
    schedule: str = "constant"
    warmup: int = 0
    local_epochs: int = 5
    local_lr: float = 0.1
    #: how the clients' learning rate moves over rounds (the server's has ``schedule``).
    local_schedule: str = "cosine"
    local_momentum: float = 0.9
    batch_size: int = 32
    attackers: int = 0
    attack: str = "sign_flip"
    #: the factor of sign_flip and scaled, the noise of gaussian, epsilon of ipm.
    attack_scale: float = 10.0
    #: the validation screen (p2pnode.training.screening) in front of the rule.
    screen: bool = False
    #: nats a drop must lower the validation loss by.
    screen_margin: float = 0.0
    #: greedy screen (re-score after each drop) or one pass
    screen_rescore: bool = True
    #: search sets of up to f updates to drop (ScreenedRule.subset)
    screen_subset: bool = False
    #: images of the training set the validators hold as their validation split (a sample of
    #: the training distribution, as FLTrust's root set; the test split stays unseen).
    val_size: int = 180
    #: measured alternatives (docs/learning.md): bucketing with buckets of this size (0: off),
    #: client momentum (honest clients send m = b m + (1 - b) delta), the f of the mixing step
    #: when it differs from the rule's.
    bucket: int = 0
    client_momentum: float = 0.0
    mixing_f: int | None = None
    test_fraction: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.clients < 1 or self.rounds < 1:
            raise ValueError("need at least one client and one round")
        if not 0 <= self.attackers < self.clients:
            raise ValueError("attackers must be fewer than clients")
        if self.attack not in ATTACKS:
            raise ValueError(f"unknown attack {self.attack!r}; known: {ATTACKS}")
        if self.rule not in RULE_NAMES:
            raise ValueError(f"unknown rule {self.rule!r}; known: {RULE_NAMES}")
        if self.compression not in COMPRESSION_KINDS:
            raise ValueError(f"unknown compression {self.compression!r}")
        if self.alpha is not None and not self.alpha > 0:
            raise ValueError("alpha must be positive (or None for IID)")

    @property
    def tolerated(self) -> int:
        return self.byzantine if self.byzantine is not None else max(1, self.attackers)


@dataclass(frozen=True, slots=True)
class RoundRecord:
    round: int
    accuracy: float
    train_loss: float
    bytes_per_update: int
    outliers: tuple[str, ...]
    attackers_flagged: int
    honest_flagged: int
    seconds_aggregating: float
    #: attackers whose update did not enter the aggregate (a screen's drops, Krum's choice)
    attackers_left_out: int = 0


@dataclass(slots=True)
class FederatedResult:
    config: FederatedConfig
    attacker_ids: tuple[str, ...]
    rounds: list[RoundRecord] = field(default_factory=list)
    centralized_curve: list[float] = field(default_factory=list)
    params_count: int = 0
    #: the rule as built, e.g. ``nnm+trimmed_mean``
    rule_name: str = ""

    @property
    def accuracy(self) -> float:
        return self.rounds[-1].accuracy

    @property
    def centralized(self) -> float:
        return self.centralized_curve[-1] if self.centralized_curve else float("nan")

    @property
    def bytes_per_update(self) -> int:
        return self.rounds[-1].bytes_per_update


def _build_model(cfg: FederatedConfig, data: Dataset) -> Model:
    if cfg.model == "mlp":
        return make_model("mlp", in_features=data.num_features, hidden=cfg.hidden, num_classes=10)
    return make_model(cfg.model, in_features=data.num_features, num_classes=10)


def _split(cfg: FederatedConfig, rng: np.random.Generator) -> tuple[Dataset, Dataset]:
    return train_test_split(load_digits(), cfg.test_fraction, rng)


def _attack_delta(
    kind: str, honest: np.ndarray, scale: float, rng: np.random.Generator
) -> np.ndarray:
    if kind == "label_flip" or kind in OMNISCIENT_ATTACKS:
        return honest  # label_flip poisons the data; the crafted attacks come after training
    return corrupt_update(kind, honest, scale, rng)


def build_rule(cfg: FederatedConfig, round: int = 0) -> AggregationRule | ScreenedRule:
    """The rule as the config says, behind the validation screen if ``cfg.screen``; once the
    screen drops k inputs the rule is re-made for f - k. ``round`` seeds bucketing."""
    extra = {"clip_norm": cfg.clip_norm} if cfg.rule == "fedavg" and cfg.clip_norm else {}
    rule = make_rule(cfg.rule, f=cfg.tolerated, mixing=cfg.mixing, **extra)
    if cfg.mixing_f is not None:
        plain = make_rule(cfg.rule, f=cfg.tolerated, mixing=False, **extra)
        rule = NearestNeighborMixing(plain, cfg.mixing_f)
    if cfg.bucket:
        # ceil(n / s) buckets, of which the inner rule can tolerate fewer than half.
        fb = min(cfg.tolerated, (-(-cfg.clients // cfg.bucket) - 1) // 2)
        inner = make_rule(cfg.rule, f=fb, mixing=cfg.mixing, **extra)
        rule = Bucketing(inner, cfg.bucket, seed=cfg.seed * 1000 + round)
    if not cfg.screen:
        return rule

    def remake(dropped: int) -> AggregationRule:
        return make_rule(cfg.rule, f=max(0, cfg.tolerated - dropped), mixing=cfg.mixing, **extra)

    return ScreenedRule(
        rule,
        max_drop=cfg.tolerated,
        margin=cfg.screen_margin,
        rescore=cfg.screen_rescore,
        subset=cfg.screen_subset,
        remake=remake,
    )


def run_centralized(cfg: FederatedConfig, train: Dataset, test: Dataset) -> list[float]:
    """Test accuracy of plain SGD on the pooled training set, one point per round's worth of
    epochs (``local_epochs``): same model, initial weights, learning-rate schedule, momentum and
    batch size as the clients, so the gap measures what federation costs."""
    rng = np.random.default_rng([cfg.seed, 1])
    model = _build_model(cfg, train)
    params = model.init(np.random.default_rng([cfg.seed, 2]))
    schedule = make_schedule(cfg.local_schedule, cfg.local_lr, cfg.rounds)
    curve = []
    for r in range(cfg.rounds):
        params, _ = local_sgd(
            model,
            params,
            train,
            epochs=cfg.local_epochs,
            batch_size=cfg.batch_size,
            lr=schedule(r),
            momentum=cfg.local_momentum,
            rng=rng,
        )
        curve.append(accuracy(model, params, test.x, test.y))
    return curve


def run_federated(cfg: FederatedConfig, centralized: bool = True) -> FederatedResult:
    """One full run; with ``centralized`` also the pooled-data baseline.

    Kept in one piece (about 85 lines): set-up, then the rounds, in the order their random
    draws are made, so that what a seed reproduces can be read off top to bottom."""
    split_rng = np.random.default_rng([cfg.seed, 0])
    train, test = _split(cfg, split_rng)
    if cfg.alpha is None:
        shards = iid_shards(len(train), cfg.clients, split_rng)
    else:
        shards = dirichlet_shards(train.y, cfg.clients, cfg.alpha, split_rng)
    ids = [f"client-{i:02d}" for i in range(cfg.clients)]
    attacker_ids = tuple(
        sorted(str(i) for i in split_rng.choice(ids, cfg.attackers, replace=False))
    )
    client_data = {cid: train.subset(s) for cid, s in zip(ids, shards, strict=True)}
    for cid in attacker_ids:
        if cfg.attack == "label_flip":
            d = client_data[cid]
            client_data[cid] = Dataset(d.x, (9 - d.y).astype(np.int64))

    model = _build_model(cfg, train)
    params: StateDict = model.init(np.random.default_rng([cfg.seed, 2]))
    spec = ParamSpec.of(params)
    rule = build_rule(cfg)
    # The validators' split: its own random stream, so runs without a screen are unchanged.
    val = train.subset(
        np.sort(np.random.default_rng([cfg.seed, 5]).choice(len(train), cfg.val_size, False))
    )
    optimizer = make_optimizer(
        cfg.optimizer, **({"momentum": cfg.server_momentum} if cfg.optimizer == "sgd" else {})
    )
    opt_state = optimizer.init(params)
    schedule = make_schedule(cfg.schedule, cfg.server_lr, cfg.rounds, cfg.warmup)
    compressor = Compressor(cfg.compression, ratio=cfg.ratio, values=cfg.sparse_values)
    use_ef = compressor.needs_error_feedback if cfg.error_feedback is None else cfg.error_feedback
    feedback = {cid: ErrorFeedback(compressor) for cid in ids}
    client_rngs = {cid: np.random.default_rng([cfg.seed, 3, i]) for i, cid in enumerate(ids)}
    local_schedule = make_schedule(cfg.local_schedule, cfg.local_lr, cfg.rounds)

    result = FederatedResult(cfg, attacker_ids, params_count=spec.size, rule_name=rule.name)
    momenta: dict[str, np.ndarray] = {}
    for r in range(cfg.rounds):
        if cfg.bucket:
            rule = build_rule(cfg, r)
        updates = []
        sizes = []
        losses = []
        deltas = {}
        for cid in ids:
            rng = client_rngs[cid]
            local, loss = local_sgd(
                model,
                params,
                client_data[cid],
                epochs=cfg.local_epochs,
                batch_size=cfg.batch_size,
                lr=local_schedule(r),
                momentum=cfg.local_momentum,
                rng=rng,
            )
            deltas[cid] = model_delta(local, params)
            if cid in attacker_ids:
                deltas[cid] = _attack_delta(cfg.attack, deltas[cid], cfg.attack_scale, rng)
            else:
                losses.append(loss)
        if cfg.client_momentum:
            b = cfg.client_momentum
            for cid in ids:
                if cid not in attacker_ids:
                    prev = momenta.get(cid, np.zeros_like(deltas[cid]))
                    momenta[cid] = (b * prev + (1 - b) * deltas[cid]).astype(np.float32)
                    deltas[cid] = momenta[cid]
        if cfg.attack in OMNISCIENT_ATTACKS and attacker_ids:
            # Omniscient attackers: they see every honest update of the round.
            honest = np.stack([deltas[c] for c in ids if c not in attacker_ids])
            crafted = craft_update(
                cfg.attack, honest, cfg.clients, len(attacker_ids), eps=cfg.attack_scale
            )
            for cid in attacker_ids:
                deltas[cid] = crafted
        for cid in ids:
            rng = client_rngs[cid]
            delta = deltas[cid]
            blob = feedback[cid].encode(delta, rng) if use_ef else compressor.encode(delta, rng)
            sizes.append(len(blob))
            # What the validator sees: the decoded bytes, nothing else of the client's.
            updates.append(ClientUpdate(cid, decode(blob), len(client_data[cid])))
        t0 = time.perf_counter()
        if isinstance(rule, ScreenedRule):
            agg = rule.aggregate_with(updates, validation_loss_fn(model, params, val))
        else:
            agg = rule.aggregate(updates)
        seconds = time.perf_counter() - t0
        grads = unflatten(-agg.aggregate, spec)
        params, opt_state = optimizer.step(params, grads, opt_state, schedule(r))
        acc = accuracy(model, params, test.x, test.y)
        flagged_attackers = sum(1 for o in agg.outliers if o in attacker_ids)
        result.rounds.append(
            RoundRecord(
                round=r + 1,
                accuracy=acc,
                train_loss=float(np.mean(losses)) if losses else float("nan"),
                bytes_per_update=round(np.mean(sizes)),
                outliers=agg.outliers,
                attackers_flagged=flagged_attackers,
                honest_flagged=len(agg.outliers) - flagged_attackers,
                seconds_aggregating=seconds,
                attackers_left_out=sum(1 for a in attacker_ids if a not in agg.contributors),
            )
        )
        logger.info("round %d accuracy %.4f outliers %s", r + 1, acc, agg.outliers)
    if centralized:
        result.centralized_curve = run_centralized(cfg, train, test)
    return result


def float32_bytes(result: FederatedResult) -> int:
    """Bytes of the same update sent uncompressed as float32, for ratios."""
    return 4 * result.params_count


def report_markdown(result: FederatedResult) -> str:
    cfg = result.config
    lines = [
        "# Federated run on the digits",
        "",
        "Config: " + ", ".join(f"{k}={v}" for k, v in asdict(cfg).items()),
        "",
        f"Rule: {result.rule_name}; parameters: {result.params_count}; "
        f"attackers: {', '.join(result.attacker_ids) or '-'}",
        "",
        "| round | accuracy | centralized | train loss | bytes/update | outliers flagged "
        "(attackers / honest) |",
        "|---:|---:|---:|---:|---:|---|",
    ]
    for rec, cen in zip(
        result.rounds, result.centralized_curve or [math.nan] * len(result.rounds), strict=True
    ):
        lines.append(
            f"| {rec.round} | {rec.accuracy:.4f} | {cen:.4f} | {rec.train_loss:.4f} | "
            f"{rec.bytes_per_update} | {rec.attackers_flagged} / {rec.honest_flagged} |"
        )
    lines += [
        "",
        f"Final test accuracy {result.accuracy:.4f}; centralized {result.centralized:.4f}.",
        "",
    ]
    return "\n".join(lines)


def write_outputs(result: FederatedResult, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(report_markdown(result), encoding="utf-8")
    series = [Series(f"federated ({result.rule_name})", [rec.accuracy for rec in result.rounds])]
    if result.centralized_curve:
        series.append(Series("centralized", result.centralized_curve))
    accuracy_chart(out / "accuracy.png", series)


def _parse_alpha(text: str) -> float | None:
    return None if text.lower() in ("iid", "inf", "none") else float(text)


def parse_args(argv: Sequence[str] | None) -> tuple[FederatedConfig, Path, bool]:
    p = argparse.ArgumentParser(prog="python -m p2pnode_simulations.federated", description=__doc__)
    d = FederatedConfig()
    p.add_argument("--clients", type=int, default=d.clients)
    p.add_argument("--rounds", type=int, default=d.rounds)
    p.add_argument("--alpha", type=_parse_alpha, default=d.alpha, help="Dirichlet alpha or iid")
    p.add_argument("--model", choices=("mlp", "softmax"), default=d.model)
    p.add_argument("--hidden", type=int, nargs="*", default=list(d.hidden))
    p.add_argument("--rule", choices=RULE_NAMES, default=d.rule)
    p.add_argument("--byzantine", type=int, default=None, help="f the rule is set up for")
    p.add_argument("--clip-norm", type=float, default=None, help="FedAvg norm clipping")
    p.add_argument(
        "--mixing",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="nearest-neighbour mixing first (default: on for robust rules, off for fedavg)",
    )
    p.add_argument("--compression", choices=COMPRESSION_KINDS, default=d.compression)
    p.add_argument("--ratio", type=float, default=d.ratio, help="fraction kept by topk/randk")
    p.add_argument(
        "--sparse-values",
        choices=("float16", "float32"),
        default=d.sparse_values,
        help="value type of topk/randk",
    )
    p.add_argument("--no-error-feedback", action="store_true")
    p.add_argument("--optimizer", choices=("sgd", "adam", "lamb"), default=d.optimizer)
    p.add_argument("--server-lr", type=float, default=d.server_lr)
    p.add_argument("--server-momentum", type=float, default=d.server_momentum)
    p.add_argument("--schedule", choices=("constant", "cosine"), default=d.schedule)
    p.add_argument("--warmup", type=int, default=d.warmup)
    p.add_argument("--local-epochs", type=int, default=d.local_epochs)
    p.add_argument("--local-lr", type=float, default=d.local_lr)
    p.add_argument("--local-schedule", choices=("constant", "cosine"), default=d.local_schedule)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--attackers", type=int, default=d.attackers)
    p.add_argument("--attack", choices=ATTACKS, default=d.attack)
    p.add_argument("--attack-scale", type=float, default=d.attack_scale)
    p.add_argument(
        "--screen",
        action=argparse.BooleanOptionalAction,
        default=d.screen,
        help="validation screen in front of the rule (drops updates that raise the loss)",
    )
    p.add_argument("--screen-margin", type=float, default=d.screen_margin)
    p.add_argument("--val-size", type=int, default=d.val_size)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--out", type=Path, default=Path("federated-report"))
    p.add_argument("--no-centralized", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true")
    a = p.parse_args(argv)
    cfg = FederatedConfig(
        clients=a.clients,
        rounds=a.rounds,
        alpha=a.alpha,
        model=a.model,
        hidden=tuple(a.hidden),
        rule=a.rule,
        byzantine=a.byzantine,
        clip_norm=a.clip_norm,
        mixing=a.mixing,
        compression=a.compression,
        ratio=a.ratio,
        sparse_values=a.sparse_values,
        error_feedback=False if a.no_error_feedback else None,
        optimizer=a.optimizer,
        server_lr=a.server_lr,
        server_momentum=a.server_momentum,
        schedule=a.schedule,
        warmup=a.warmup,
        local_epochs=a.local_epochs,
        local_lr=a.local_lr,
        local_schedule=a.local_schedule,
        batch_size=a.batch_size,
        attackers=a.attackers,
        attack=a.attack,
        attack_scale=a.attack_scale,
        screen=a.screen,
        screen_margin=a.screen_margin,
        val_size=a.val_size,
        seed=a.seed,
    )
    logging.basicConfig(level=logging.INFO if a.verbose else logging.WARNING)
    return cfg, a.out, not a.no_centralized


def main(argv: Sequence[str] | None = None) -> int:
    try:
        cfg, out, centralized = parse_args(argv)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result = run_federated(cfg, centralized=centralized)
    write_outputs(result, out)
    print(report_markdown(result))
    print(f"report: {out / 'report.md'}  plot: {out / 'accuracy.png'}")
    print(f"accuracy={result.accuracy:.4f} centralized={result.centralized:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
