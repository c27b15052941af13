"""``p2pnode demo``: a local swarm trains a model on the shipped digits, start to finish.

It starts N daemons on 127.0.0.1 (a committee of K validators) in a temporary dir (or
``--dir``), commits a job on the digits with non-IID shards (Dirichlet 0.5), shows the rounds
live while a child process trains the centralized baseline of the same model (same initial
weights, data split, seed and local training, on the pooled shards), and when the job is done
checks that every node's committed log holds the same model key for every round, stops every
daemon, writes a PNG (accuracy and loss per round; time per round by phase) and prints the
final accuracy beside the baseline's. Ctrl-C or SIGTERM at any point stops the daemons it
started, by their pids. ``--attackers N`` makes N nodes send corrupted updates
(``training.attack``; ``--attack`` says which: sign flip x10 by default, or ALIE, IPM, min-max,
min-sum or mimic, crafted to hide among the honest updates), and picks a robust rule (trimmed
mean, behind the validation screen by default) unless ``--rule`` says otherwise. The result
lists each round's contribution scores by node; the summary says where the attackers rank.
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2pnode import swarm
from p2pnode.cli.jobs import JobView, watch
from p2pnode.ipc.client import Client
from p2pnode.ipc.errors import IpcError
from p2pnode.jobs.spec import DEFAULT_LEARNING

__all__ = ["DEMO_ATTACKS", "DemoError", "DemoOptions", "job_spec", "run_demo"]

STRATEGIES = ("fedavg", "diloco")
#: ``--attack``: the update attacks of p2pnode.training.attacks (the demo's attackers use
#: ``training.attack_scale`` 10 for sign_flip and 0.5, epsilon, for ipm).
DEMO_ATTACKS = ("sign_flip", "alie", "ipm", "min_max", "min_sum", "mimic")
#: seconds the whole swarm has to see every node alive before the job is created.
MEMBERS_WAIT = 20.0
#: seconds, after the job ends on node-1, for every other node to apply the last commit.
CATCH_UP = 20.0
#: seconds the centralized baseline may still take once the swarm is done.
BASELINE_WAIT = 600.0


class DemoError(Exception):
    """The demo could not run (a swarm that did not start, a job that did not finish)."""


@dataclass(frozen=True, slots=True)
class DemoOptions:
    nodes: int = 8
    validators: int = 4
    rounds: int = 20
    strategy: str = "fedavg"
    compression: str = "none"
    rule: str | None = None
    attackers: int = 0
    attack: str = "sign_flip"
    seed: int = 0
    out: Path = Path(".")
    dir: Path | None = None
    deadline: float = 10.0
    http_port: int = 0  # node-1 serves the web view there (0: off)

    def check(self) -> None:
        if not 1 <= self.validators <= self.nodes:
            raise DemoError("--validators must be between 1 and --nodes")
        if not 1 <= self.rounds <= 1000:
            raise DemoError("--rounds must be between 1 and 1000")
        if self.strategy not in STRATEGIES:
            raise DemoError(f"--strategy must be one of {', '.join(STRATEGIES)}")
        if not 0 <= self.attackers < self.nodes:
            raise DemoError("--attackers must be fewer than --nodes")
        if not 0 <= self.http_port <= 65535:
            raise DemoError("--http-port must be between 1 and 65535")
        if self.attack not in DEMO_ATTACKS:
            raise DemoError(f"--attack must be one of {', '.join(DEMO_ATTACKS)}")

    @property
    def rule_name(self) -> str:
        return self.rule or ("trimmed_mean" if self.attackers else "fedavg")


def job_spec(o: DemoOptions) -> str:
    """The job's TOML spec (docs/jobs.md)."""
    if o.strategy == "diloco":  # DiLoCo: outer SGD with Nesterov momentum on the averaged delta
        outer = 'optimizer = "sgd"\nlr = 0.7\nmomentum = 0.9\nnesterov = true'
    else:  # FedAvg: the averaged delta applied as it is
        outer = 'optimizer = "sgd"\nlr = 1.0\nmomentum = 0.0'
    return f"""name = "demo-{o.strategy}"
rounds = {o.rounds}

[model]
kind = "mlp"
init_seed = {o.seed}

[data]
source = "digits"
shards = "dirichlet"
alpha = 0.5
seed = {o.seed}

[outer]
{outer}

[aggregation]
rule = "{o.rule_name}"
f = {max(1, o.attackers)}

[compression]
kind = "{o.compression}"

[participants]
max = {o.nodes}

[sync]
deadline = {o.deadline}
"""


@contextmanager
def _interruptible() -> Iterator[None]:
    """SIGTERM acts as Ctrl-C (KeyboardInterrupt), so either one unwinds to the clean-up."""

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _stop(nodes: list[swarm.SwarmNode]) -> None:
    """Stop every daemon, ignoring further Ctrl-C meanwhile: a second press must not leave
    daemons behind half-stopped."""
    old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        swarm.stop(nodes)
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def _wait_members(node: swarm.SwarmNode, n: int) -> None:
    """Until ``node`` sees ``n`` live members (the job's participants come from its view)."""
    deadline = time.monotonic() + MEMBERS_WAIT
    while time.monotonic() < deadline:
        try:
            with Client(socket_path=node.socket, timeout=5) as c:
                members = c.call("members")["members"]
            if sum(1 for m in members if m["state"] == "alive") >= n:
                return
        except IpcError:
            pass
        time.sleep(0.2)


def _histories(nodes: list[swarm.SwarmNode], job: str, rounds: int) -> dict[str, list[str]]:
    """Each node's committed model key per round, once it has applied every round (or after
    :data:`CATCH_UP` seconds, with what it has)."""
    keys: dict[str, list[str]] = {}
    deadline = time.monotonic() + CATCH_UP
    for node in nodes:
        while True:
            try:
                with Client(socket_path=node.socket, timeout=10) as c:
                    s = c.call("job.status", {"job": job})
            except IpcError:
                s = {"history": [], "status": "unknown"}
            keys[node.name] = [h["model_key"] for h in s["history"]]
            # "completed" once the node has applied the last round's commit.
            done = len(keys[node.name]) >= rounds and s["status"] != "running"
            if done or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    return keys


def centralized_curve(o: DemoOptions) -> list[float]:
    """The baseline: the same model, initial weights, split, local training and seed as the
    job, trained on the pooled training shards; test accuracy after each round's epochs."""
    import numpy as np

    from p2pnode.training.data import load_digits, train_test_split
    from p2pnode_simulations.federated import FederatedConfig, run_centralized

    lr = DEFAULT_LEARNING
    cfg = FederatedConfig(
        clients=o.nodes,
        rounds=o.rounds,
        hidden=tuple(lr["hidden"]),
        local_epochs=int(lr["epochs"]),
        local_lr=float(lr["local_lr"]),
        local_momentum=float(lr["local_momentum"]),
        local_schedule=str(lr["local_schedule"]),
        batch_size=int(lr["batch_size"]),
        test_fraction=float(lr["test_fraction"]),
        seed=o.seed,
    )
    train, test = train_test_split(
        load_digits(), cfg.test_fraction, np.random.default_rng([o.seed, 0])
    )
    return run_centralized(cfg, train, test)


def _prepare(o: DemoOptions, parent: Path) -> list[swarm.SwarmNode]:
    """The node dirs (a genesis committee of ``o.validators``); the last ``o.attackers``
    nodes get ``training.attack = "sign_flip"``; node-1 serves the web view on ``o.http_port``."""
    from p2pnode.config.edit import set_config_value
    from p2pnode.consensus.genesis import genesis_validators

    swarm.check_free(parent, o.nodes)
    settings = {"consensus.validators": genesis_validators(parent, o.validators)}
    nodes = swarm.prepare(parent, o.nodes, settings)
    scale = "0.5" if o.attack == "ipm" else "10.0"
    for i, n in enumerate(nodes):  # a reused --dir keeps its configs: set the attack each time
        attack = o.attack if i >= o.nodes - o.attackers else ""
        set_config_value(n.data_dir, "training.attack", [attack])
        set_config_value(n.data_dir, "http.port", [str(o.http_port if i == 0 else 0)])
        set_config_value(n.data_dir, "training.attack_scale", [scale])
    return nodes


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_demo(o: DemoOptions, *, live: bool = True, say: Any = print) -> dict[str, Any]:
    """The whole demo; returns the JSON result. ``say`` prints progress lines for people.

    One function, read top to bottom (about 100 lines): the swarm's life is one try/finally
    so that no path out of it, Ctrl-C included, leaves a daemon running."""
    o.check()
    t0 = time.monotonic()
    made = o.dir is None
    parent = Path(tempfile.mkdtemp(prefix="p2pnode-demo-")) if made else Path(o.dir).absolute()
    nodes: list[swarm.SwarmNode] = []
    # The baseline trains in a child process while the swarm does (the daemons wait on each
    # other much of a round); a process, not a thread, so that Ctrl-C can end it at once. Forked
    # here, before any thread of ours exists; it ignores SIGINT (the terminal sends it to the
    # whole process group) and is terminated in the finally below.
    pool = multiprocessing.get_context("fork").Pool(1, initializer=_ignore_sigint)
    try:
        with _interruptible():
            nodes = _prepare(o, parent)
            attackers = nodes[len(nodes) - o.attackers :] if o.attackers else []
            say(f"starting {o.nodes} daemons ({o.validators} validators) in {parent}")
            swarm.start(nodes)
            swarm.wait_ready(nodes)
            if o.http_port:
                say(f"web view: http://127.0.0.1:{o.http_port}/ (node-1)")
            _wait_members(nodes[0], o.nodes)
            ready = time.monotonic() - t0
            with Client(socket_path=nodes[0].socket, timeout=90) as c:
                created = c.call("job.create", {"spec": job_spec(o), "timeout": 60})
            job = created["job"]
            baseline = pool.apply_async(centralized_curve, (o,))
            say(
                f"job {job[:16]}: {o.rounds} rounds of {o.strategy} (rule {o.rule_name}) on the "
                f"digits, Dirichlet(0.5) shards"
                + (f", {o.attackers} attackers ({o.attack})" if o.attackers else "")
            )
            view = JobView(f"p2pnode demo ({o.nodes} nodes)")
            t_job = time.monotonic()
            status = watch(
                lambda: Client(socket_path=nodes[0].socket, timeout=30),
                job,
                view=view,
                live=live,
                timeout=o.rounds * (o.deadline * 3 + 10) + 60,
            )
            train_seconds = time.monotonic() - t_job
            if status["status"] != "completed":
                raise DemoError(f"the job ended {status['status']}: {status.get('reason')}")
            took: dict[str, float] = {"ready": ready, "train": train_seconds}
            mark = time.monotonic()
            keys = _histories(nodes, job, o.rounds)
            took["check"], mark = time.monotonic() - mark, time.monotonic()
            final = status["history"]
            model_keys = [h["model_key"] for h in final]
            attacker_ids = [n.peer_id for n in attackers]
            _stop(nodes)
            took["stop"], mark = time.monotonic() - mark, time.monotonic()
        curve = baseline.get(timeout=BASELINE_WAIT)
        took["baseline_wait"], mark = time.monotonic() - mark, time.monotonic()
        o.out.mkdir(parents=True, exist_ok=True)
        png = (o.out / "demo.png").absolute()
        from p2pnode_simulations.plots import training_chart

        training_chart(
            png,
            final,
            centralized=curve,
            title=f"{o.nodes} daemons, strategy {o.strategy}, rule {o.rule_name}, seed {o.seed}",
        )
        took["chart"] = time.monotonic() - mark
        return {
            "job": job,
            "final_accuracy": status["accuracy"],
            "final_loss": status["loss"],
            "centralized_accuracy": curve[-1],
            "rounds": len(final),
            "model_keys": model_keys,
            "keys_agree": all(k == model_keys for k in keys.values()),
            "keys_by_node": {name: len(k) for name, k in keys.items()},
            "round_seconds": [(h.get("phases") or {}).get("total") for h in final],
            "phases": [h.get("phases") or {} for h in final],
            "accuracy": [h["accuracy"] for h in final],
            "loss": [h["loss"] for h in final],
            "centralized": curve,
            "outliers": [h["outliers"] for h in final],
            "contributors": [h["contributors"] for h in final],
            "scores": [h.get("scores") or {} for h in final],
            "attackers": attacker_ids,
            "attack": o.attack if o.attackers else "",
            "strategy": o.strategy,
            "rule": o.rule_name,
            "compression": o.compression,
            "nodes": o.nodes,
            "validators": o.validators,
            "seed": o.seed,
            "png": str(png),
            "ready_seconds": round(ready, 2),
            "took": {k: round(v, 2) for k, v in took.items()},
            "train_seconds": round(train_seconds, 2),
            "seconds": round(time.monotonic() - t0, 2),
        }
    finally:
        _stop(nodes)
        pool.terminate()
        pool.join()
        if made:
            shutil.rmtree(parent, ignore_errors=True)


def attackers_lowest(r: dict[str, Any]) -> int:
    """Rounds in which every attacker's contribution score is below every honest node's."""
    bad = set(r["attackers"])
    count = 0
    for scores in r["scores"]:
        mine = [s for n, s in scores.items() if n in bad]
        theirs = [s for n, s in scores.items() if n not in bad]
        if mine and theirs and max(mine) < min(theirs):
            count += 1
    return count


def summary(r: dict[str, Any]) -> str:
    attack = f", {len(r['attackers'])} attackers" if r["attackers"] else ""
    flagged = sum(1 for o in r["outliers"][-1:] for p in o if p in r["attackers"])
    lines = [
        f"final accuracy {r['final_accuracy']:.4f} after {r['rounds']} rounds on "
        f"{r['nodes']} daemons (strategy {r['strategy']}, rule {r['rule']}{attack})",
        f"centralized    {r['centralized_accuracy']:.4f} (same model, data and local training)",
        "model keys     "
        + ("the same on every node" if r["keys_agree"] else f"DIFFER: {r['keys_by_node']}"),
        f"time           {r['seconds']:.1f} s ({r['ready_seconds']:.1f} s to start, "
        f"{r['train_seconds']:.1f} s training)",
        f"chart          {r['png']}",
    ]
    if r["attackers"]:
        lowest = attackers_lowest(r)
        lines.insert(3, f"flagged        {flagged} of {len(r['attackers'])} attackers last round")
        left_out = sum(1 for c in r["contributors"] for p in r["attackers"] if p not in c)
        lines.insert(
            4,
            f"scores         the attackers ({r['attack']}) score lowest in {lowest} of "
            f"{len(r['scores'])} rounds; left out of the model {left_out} times",
        )
    return "\n".join(lines)


def cmd_demo(args: Any) -> int:
    """The ``p2pnode demo`` command (its parser is in :mod:`p2pnode.cli.commands`)."""
    o = DemoOptions(
        nodes=args.nodes,
        validators=args.validators,
        rounds=args.rounds,
        strategy=args.strategy,
        compression=args.compression,
        rule=args.rule,
        attackers=args.attackers,
        attack=args.attack,
        seed=args.seed,
        out=Path(args.out),
        dir=Path(args.dir) if args.dir else None,
        http_port=args.http_port or 0,
    )

    def say(line: str) -> None:
        print(line, file=sys.stderr if args.json else sys.stdout, flush=True)

    try:
        r = run_demo(o, live=not args.json and sys.stdout.isatty(), say=say)
    except (DemoError, swarm.SwarmError) as exc:
        from p2pnode.cli.support import CliError

        raise CliError(f"demo: {exc}") from None
    except KeyboardInterrupt:
        print("interrupted: every daemon stopped", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(r))
    else:
        print(summary(r))
    return 0 if r["keys_agree"] else 1
