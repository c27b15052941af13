"""The membership simulator: the real ``p2pnode_protocols.heartbeat.Membership`` machines on a
``SimClock`` and a lossy, jittery ``SimNetwork`` with crashes, recoveries and a partition.

    python -m p2pnode_simulations.heartbeat --n 1000 --loss 0.05 --seed 1
    python -m p2pnode_simulations.heartbeat --n 10000 --loss 0.05 --duration 40

One ``random.Random(seed)`` gives sub-seeds to the network, the fault schedule and every node's
machine, so a seed replays exactly (same events, same figures). Nodes start knowing each other
(a shared, copy-on-write ``MemberBase``: 10,000 private tables would be 10^8 entries); a restarted
node starts from that same base with a new incarnation, as a daemon would after a push-pull.

Phases: warm-up; crashes (some recover later) and node-state changes; a minority partition that
heals; then the world must converge (every live node's view equals the truth) within a budget.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import random
import sys
import time
from dataclasses import asdict, dataclass, field

from p2pnode_protocols.heartbeat import (
    HeartbeatConfig,
    KeyedHashVerifier,
    LocalStateChanged,
    MemberBase,
    MemberChanged,
    Membership,
    MessageReceived,
    NodeState,
    Send,
    SetTimer,
    Started,
    TimerFired,
    decode_packet,
    encode_packet,
    packet_size,
)
from p2pnode_protocols.heartbeat.codec import alive_payload
from p2pnode_protocols.heartbeat.messages import Alive
from p2pnode_simulations.sim import SimClock, SimNetwork
from p2pnode_simulations.sim.membership_checker import MembershipChecker

__all__ = ["HeartbeatWorld", "Scenario", "SimReport", "daemon_config", "main"]

_clock = time.perf_counter

log = logging.getLogger(__name__)


def daemon_config(**overrides: object) -> HeartbeatConfig:
    """The daemon's own defaults (``HeartbeatConfig.daemon()``, which the daemon's config
    section is laid over: one source of truth), plus overrides."""
    return HeartbeatConfig.daemon(**overrides)


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    seed: int = 1
    n: int = 1000
    loss: float = 0.05
    delay_min: float = 0.0005
    delay_mean: float = 0.005
    warmup: float = 5.0
    crashes: int = 5
    #: Crashed nodes that restart, and after how long.
    recoveries: int = 2
    recover_after: float = 15.0
    state_changes: int = 5
    #: Nodes cut off from the rest (0: no partition), from when, for how long.
    partition_size: int = 0
    partition_at: float = 30.0
    partition_for: float = 15.0
    duration: float = 40.0
    #: After ``duration``: loss stops; every live view must match the truth within this.
    converge_budget: float = 60.0
    #: Round-trip every packet through the CBOR codec (slower; for small runs and tests).
    wire: bool = False
    config: HeartbeatConfig = field(default_factory=daemon_config)

    def describe(self) -> str:
        d = asdict(self)
        d.pop("config")
        return " ".join(f"{k}={v}" for k, v in d.items())


@dataclass
class SimReport:
    scenario: Scenario
    ok: bool
    message: str
    detection: list[float]  # per (crash, surviving observer)
    detection_all: list[float]  # per crash: until the last survivor
    detection_first: list[float]  # per crash: until the first survivor
    dissemination_99: list[float]
    #: Per state change: until *every* node up since the start has it (inf: some never did).
    dissemination_all: list[float]
    false_deaths: int
    false_suspicions: int
    false_suspicion_rate: float  # per probe of a healthy member
    #: Steady state: warm-up over, until the partition (5% loss, crashes, recoveries and state
    #: changes going on).
    msgs_per_node_interval: float
    bytes_per_node_second: float
    cpu_us_per_node_second: float  # the whole simulator, per node
    machine_us_per_node_second: float  # inside the machines only
    #: The partition and its heal (from the cut to the end of the run; None: no partition).
    partition_msgs_per_node_interval: float | None
    partition_bytes_per_node_second: float | None
    converge_time: float | None
    wall: float
    events: int
    stats: dict[str, int]


@dataclass(slots=True, kw_only=True)
class _Costs:
    """What the steady state (``measured`` seconds of it) and the partition cost."""

    measured: float
    sent: int
    sent_bytes: int
    cpu: float
    machine_cpu: float
    partition_msgs: float | None = None
    partition_bytes: float | None = None


def node_id(i: int) -> bytes:
    # Shaped like an Ed25519 peer id (identity multihash, 38 bytes): realistic packet sizes.
    return b"\x00\x24\x08\x01\x12\x20" + hashlib.sha256(b"node-%d" % i).digest()


class _Signers:
    """Keyed-hash signatures (fast; see p2pnode_protocols.heartbeat.signing)."""

    def __init__(self, seed: int) -> None:
        self.verifier = KeyedHashVerifier(hashlib.sha512(b"world-%d" % seed).digest())


class HeartbeatWorld:
    def __init__(self, scenario: Scenario) -> None:
        self.sc = sc = scenario
        root = random.Random(sc.seed * 1_000_003 + 7)
        self._net_rng = random.Random(root.getrandbits(64))
        self._fault_rng = random.Random(root.getrandbits(64))
        self._node_seeds = [root.getrandbits(64) for _ in range(sc.n)]
        self.clock = SimClock()
        self.net = SimNetwork(
            self.clock,
            self._net_rng,
            self._deliver,
            n=sc.n,
            loss=sc.loss,
            delay_min=sc.delay_min,
            delay_mean=sc.delay_mean,
        )
        self.ids = [node_id(i) for i in range(sc.n)]
        self.index = {x: i for i, x in enumerate(self.ids)}
        self.verifier = _Signers(sc.seed).verifier
        self.signers = [self.verifier.signer_for(x) for x in self.ids]
        self.states = [self._state(i, 0) for i in range(sc.n)]
        records = []
        for i, x in enumerate(self.ids):
            sig = self.signers[i].sign(alive_payload(x, 0, self.states[i]))
            records.append(Alive(node=x, incarnation=0, state=self.states[i], signature=sig))
        self.base = MemberBase(records)
        self.nodes: list[Membership | None] = [None] * sc.n
        self.life = [0] * sc.n
        self.checker = MembershipChecker(sc.n)
        self.checker.index = self.index
        self.stats = {"crashes": 0, "restarts": 0, "refused": 0}
        #: Seconds spent inside the machines' ``handle`` (timers and packets): what a daemon
        #: would pay, without the simulator's own event queue and network.
        self.machine_cpu = 0.0

    def _state(self, i: int, version: int) -> NodeState:
        return NodeState(
            addrs=(f"/ip4/10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}/tcp/4001",),
            version="0.1.0",
            cpu_cores=8,
            memory_mb=16384,
            bandwidth_mbps=940.0,
            tasks_running=version % 4,
            free_slots=4 - version % 4,
            models=(f"mlp@{version}",) if version else (),
        )

    # -- nodes ---------------------------------------------------------------------------------

    def _boot(self, i: int, incarnation: int, announce: bool) -> None:
        m = Membership(
            signer=self.signers[i],
            verifier=self.verifier,
            config=self.sc.config,
            rng=random.Random(self._node_seeds[i] + self.life[i]),
            incarnation=incarnation,
            state=self.states[i],
            base=self.base,
        )
        self.nodes[i] = m
        self._run(i, m.handle(Started(announce=announce), self.clock.now))

    def _run(self, i: int, effects: list) -> None:  # type: ignore[type-arg]
        net, clock, index = self.net, self.clock, self.index
        for e in effects:
            t = type(e)
            if t is Send:
                p = e.msg
                if self.sc.wire:
                    data = encode_packet(p)
                    net.send(i, index[e.to], data, len(data))
                else:
                    net.send(i, index[e.to], p, packet_size(p))
            elif t is SetTimer:
                clock.call_at(e.at, self._fire, i, self.life[i], e.key, e.generation)
            elif t is MemberChanged:
                self.checker.on_change(i, index[e.node], e, clock.now)

    def _fire(self, i: int, life: int, key: object, gen: int) -> None:
        m = self.nodes[i]
        if m is None or life != self.life[i]:
            return
        t0 = _clock()
        effects = m.handle(TimerFired(key=key, generation=gen), self.clock.now)  # type: ignore[arg-type]
        self.machine_cpu += _clock() - t0
        self._run(i, effects)

    def _deliver(self, dst: int, src: int, payload: object) -> None:
        m = self.nodes[dst]
        if m is None:
            return
        if isinstance(payload, bytes):
            cfg = self.sc.config
            try:
                # The daemon's limits: push-pull answers may exceed one packet's size.
                payload = decode_packet(
                    payload, max_bytes=cfg.max_packet_bytes, max_sync_bytes=cfg.max_sync_bytes
                )
            except Exception:
                self.stats["refused"] += 1
                return
        ev = MessageReceived(sender=self.ids[src], msg=payload)  # type: ignore[arg-type]
        t0 = _clock()
        effects = m.handle(ev, self.clock.now)
        self.machine_cpu += _clock() - t0
        self._run(dst, effects)

    def crash(self, i: int) -> None:
        if self.nodes[i] is None:
            return
        self.nodes[i] = None
        self.life[i] += 1
        self.stats["crashes"] += 1
        self.checker.crash(i, self.clock.now)

    def restart(self, i: int) -> None:
        if self.nodes[i] is not None:
            return
        self.stats["restarts"] += 1
        self.checker.restart(i, self.clock.now)
        # A daemon starts at its boot time in milliseconds: above any earlier incarnation.
        inc = int(self.clock.now * 1000) + 1
        self.checker.life_inc[i] = inc
        self._boot(i, inc, announce=True)

    def change_state(self, i: int) -> None:
        m = self.nodes[i]
        if m is None:
            return
        new = self._state(i, m.incarnation + 1)
        self._run(i, m.handle(LocalStateChanged(state=new), self.clock.now))
        self.checker.state_changed(i, m.incarnation, self.clock.now)

    # -- scenario ------------------------------------------------------------------------------

    def run(self) -> SimReport:
        """Warm-up; the steady state, whose costs are measured; the partition and its heal;
        then convergence without loss. Returns the figures (:class:`SimReport`)."""
        sc, clock = self.sc, self.clock
        log.info("heartbeat sim: %s", sc.describe())
        wall0 = time.process_time()
        for i in range(sc.n):
            self._boot(i, 0, announce=False)
        island = self._schedule_faults()

        clock.run_until(sc.warmup)
        self.net.reset_counters()  # costs are measured after the start-up transient,
        cpu0, mcpu0 = time.process_time(), self.machine_cpu
        cost_end = sc.partition_at if island else sc.duration  # and before the partition
        clock.run_until(cost_end)
        measured = cost_end - sc.warmup
        costs = _Costs(
            measured=measured,
            sent=sum(self.net.sent),
            sent_bytes=sum(self.net.bytes_sent),
            cpu=time.process_time() - cpu0,
            machine_cpu=self.machine_cpu - mcpu0,
        )
        self.net.reset_counters()
        clock.run_until(sc.duration)
        if island and sc.duration > cost_end:
            span = sc.duration - cost_end
            costs.partition_msgs = sum(self.net.sent) / sc.n / (span / sc.config.probe_interval)
            costs.partition_bytes = sum(self.net.bytes_sent) / sc.n / span
        converge_time = self._converge()
        return self._report(island, costs, converge_time, time.process_time() - wall0)

    def _schedule_faults(self) -> set[int]:
        """Crashes (some recover), state changes and the partition, drawn from the fault rng;
        returns the island (empty: no partition)."""
        sc, rng, clock = self.sc, self._fault_rng, self.clock
        victims = rng.sample(range(sc.n), sc.crashes + sc.state_changes + sc.partition_size)
        crashed = victims[: sc.crashes]
        changers = victims[sc.crashes : sc.crashes + sc.state_changes]
        island = set(victims[sc.crashes + sc.state_changes :])
        for k, i in enumerate(crashed):
            at = sc.warmup + rng.uniform(0, 5)
            clock.call_at(at, self.crash, i)
            if k < sc.recoveries:
                clock.call_at(at + sc.recover_after, self.restart, i)
        for i in changers:
            clock.call_at(sc.warmup + 1 + rng.uniform(0, 5), self.change_state, i)
        if island:
            groups = [1 if i in island else 0 for i in range(sc.n)]

            def cut() -> None:
                self.checker.excused = island
                self.net.partition(groups)

            clock.call_at(sc.partition_at, cut)
            clock.call_at(sc.partition_at + sc.partition_for, self.net.heal)
        return island

    def _converge(self) -> float | None:
        """Loss stops, the partition heals: seconds until every view matches the truth (None:
        not within ``converge_budget``)."""
        sc = self.sc
        self.net.loss = 0.0
        self.net.heal()
        t = sc.duration
        while t < sc.duration + sc.converge_budget:
            t += 0.5
            self.clock.run_until(t)
            if self.checker.wrong() == 0:
                return t - sc.duration
        return None

    def _report(
        self, island: set[int], costs: _Costs, converge_time: float | None, wall: float
    ) -> SimReport:
        sc, ch = self.sc, self.checker
        detection = [d for obs in ch.detections.values() for d in obs.values()]
        detection_all, detection_first = [], []
        for key, obs in ch.detections.items():
            if obs:
                detection_first.append(min(obs.values()))
            if obs and len(obs) >= ch.survivors_of(key):
                detection_all.append(max(obs.values()))
        dissem = []
        for (_node, _, _), obs in ch.disseminations.items():
            need = int(0.99 * (sum(ch.up) - 1))
            if len(obs) >= need and need > 0:
                dissem.append(sorted(obs.values())[need - 1])
        # 100%: every node up since the start and never cut off (a restarted node starts from
        # the shared base and learns older changes by push-pull, as an island does after the
        # heal: that is repair, not dissemination).
        stayed = [o for o in range(sc.n) if ch.up[o] and ch.up_since[o] == 0 and o not in island]
        dissem_all = []
        for (node, _, _), obs in ch.disseminations.items():
            got = [obs.get(o) for o in stayed if o != node]
            dissem_all.append(float("inf") if None in got else max(t for t in got if t is not None))
        measured = costs.measured
        probes = sc.n * measured / sc.config.probe_interval
        msg = "converged" if converge_time is not None else f"{ch.wrong()} wrong beliefs left"
        ok = converge_time is not None and not ch.false_deaths
        if ch.false_deaths:
            msg += f"; {len(ch.false_deaths)} false deaths, first {ch.false_deaths[0]}"
        return SimReport(
            scenario=sc,
            ok=ok,
            message=msg,
            detection=detection,
            detection_all=detection_all,
            detection_first=detection_first,
            dissemination_99=dissem,
            dissemination_all=dissem_all,
            false_deaths=len(ch.false_deaths),
            false_suspicions=ch.false_suspicions,
            false_suspicion_rate=ch.false_suspicions / probes,
            msgs_per_node_interval=costs.sent / sc.n / (measured / sc.config.probe_interval),
            bytes_per_node_second=costs.sent_bytes / sc.n / measured,
            cpu_us_per_node_second=1e6 * costs.cpu / sc.n / measured,
            machine_us_per_node_second=1e6 * costs.machine_cpu / sc.n / measured,
            partition_msgs_per_node_interval=costs.partition_msgs,
            partition_bytes_per_node_second=costs.partition_bytes,
            converge_time=converge_time,
            wall=wall,
            events=self.clock.events,
            stats={
                **self.stats,
                "dropped": self.net.dropped,
                "cut": self.net.cut,
                "partition_deaths": ch.partition_deaths,
                "late_detections": ch.late_detections,
            },
        )


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def format_report(r: SimReport) -> str:
    sc = r.scenario
    if r.partition_msgs_per_node_interval is None:
        part = "  partition: none in this run\n"
    else:
        part = (
            f"  partition + heal ({sc.partition_size} cut off for {sc.partition_for:.0f} s, "
            f"news O(N) by nature): {r.partition_msgs_per_node_interval:.2f} msgs/interval, "
            f"{r.partition_bytes_per_node_second:.0f} B/s per node\n"
        )
    return (
        f"sim n={sc.n} loss={sc.loss:.0%} seed={sc.seed}: {r.message}\n"
        f"  detection: first survivor p50 {pct(r.detection_first, 0.5):.2f} s  max "
        f"{max(r.detection_first, default=float('nan')):.2f} s; each survivor p50 "
        f"{pct(r.detection, 0.5):.2f} s  p99 {pct(r.detection, 0.99):.2f} s; all survivors p50 "
        f"{pct(r.detection_all, 0.5):.2f} s  max "
        f"{max(r.detection_all, default=float('nan')):.2f} s ({len(r.detection_all)} crashes)\n"
        f"  state change to 99% of nodes  p50 {pct(r.dissemination_99, 0.5):.2f} s  max "
        f"{max(r.dissemination_99, default=float('nan')):.2f} s "
        f"({len(r.dissemination_99)} changes); to 100% max "
        f"{max(r.dissemination_all, default=float('nan')):.2f} s\n"
        f"  false deaths {r.false_deaths}; false suspicions {r.false_suspicions} "
        f"({r.false_suspicion_rate:.2e} per probe); partition deaths "
        f"{r.stats['partition_deaths']}\n"
        f"  steady state per node ({sc.warmup:.0f} s to "
        f"{sc.partition_at if sc.partition_size else sc.duration:.0f} s): "
        f"{r.msgs_per_node_interval:.2f} msgs/interval, "
        f"{r.bytes_per_node_second:.0f} B/s, CPU {r.machine_us_per_node_second:.0f} us per "
        f"simulated second in the machine ({r.cpu_us_per_node_second:.0f} us with the "
        f"simulator)\n"
        f"{part}"
        f"  converged {f'in {r.converge_time:.1f} s' if r.converge_time is not None else 'NO'}"
        f" after heal; {r.events} events, {r.wall:.1f} s CPU"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m p2pnode_simulations.heartbeat", description=__doc__)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--loss", type=float, default=0.05)
    p.add_argument("--duration", type=float, default=40.0)
    p.add_argument("--crashes", type=int, default=5)
    p.add_argument(
        "--partition", type=int, default=-1, help="island size (-1: 1%% of n, at most 20)"
    )
    p.add_argument("--wire", action="store_true", help="encode and decode every packet")
    p.add_argument("-v", "--verbose", action="store_true")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO if a.verbose else logging.WARNING, format="%(message)s")
    island = max(2, min(20, a.n // 100)) if a.partition < 0 else a.partition
    sc = Scenario(
        seed=a.seed,
        n=a.n,
        loss=a.loss,
        duration=a.duration,
        crashes=a.crashes,
        partition_size=island,
        partition_at=min(25.0, a.duration - 12),
        partition_for=8.0,
        wire=a.wire,
    )
    r = HeartbeatWorld(sc).run()
    print(format_report(r))
    if not r.ok:
        print(f"  replay: python -m p2pnode_simulations.heartbeat --seed {a.seed} --n {a.n} -v")
    return 0 if r.ok else 1


if __name__ == "__main__":
    sys.exit(main())
