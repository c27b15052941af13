"""Node configuration: one schema, four sources, one precedence.

Every setting has a dotted key (``dht.replication``), a type, a default, a check and a line of
documentation, all in :data:`SCHEMA`. Values come from, highest first: command-line flags,
``P2PNODE_<KEY>`` environment variables (dots become underscores: ``P2PNODE_DHT_REPLICATION``),
``config.toml`` in the data dir, then the defaults. A bad value anywhere raises
:class:`ConfigError` whose message is one line naming the key, the source and the reason. The
commented ``config.toml`` that ``p2pnode init`` writes and the reference ``docs/configuration.md``
(:func:`config_reference_markdown`, checked by a unit test) are generated from the same schema,
so neither can disagree with the code.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_DATA_DIR = Path("~/.p2pnode")
CONFIG_FILE = "config.toml"
KEY_FILE = "identity.key"
SOCKET_FILE = "p2pnode.sock"
DB_FILE = "node.db"
ENV_PREFIX = "P2PNODE_"


class ConfigError(Exception):
    """A configuration value is missing, malformed or out of range (one line, names the key)."""


@dataclass(frozen=True, slots=True)
class Setting:
    key: str
    kind: type  # int, float, str, bool or list (of str)
    default: Any
    doc: str
    check: Callable[[Any], str | None] | None = None  # returns a reason when the value is bad
    optional: bool = False  # None, "" (or "off" for a non-string) means "off"
    size: bool = False  # a size in bytes: the reference shows it in KiB, MiB or GiB too


@dataclass(frozen=True, slots=True)
class _Range:
    """The check "between lo and hi", kept as data so that the reference can show the bounds."""

    lo: float
    hi: float

    def __call__(self, v: Any) -> str | None:
        return None if self.lo <= v <= self.hi else f"must be between {self.lo:g} and {self.hi:g}"


def _range(lo: float, hi: float) -> Callable[[Any], str | None]:
    return _Range(lo, hi)


def _multiaddrs(v: list[str]) -> str | None:
    # Imported here: multiaddr pulls in a DNS resolver stack, and the CLI loads this module
    # for commands that never parse an address (``p2pnode status`` must start fast).
    import multiaddr

    for a in v:
        try:
            multiaddr.Multiaddr(a)
        except Exception as exc:
            return f"{a!r} is not a multiaddr ({exc})"
    return None


def _bootstrap(v: list[str]) -> str | None:
    reason = _multiaddrs(v)
    if reason:
        return reason
    for a in v:
        if "/p2p/" not in a:
            return f"{a!r} has no /p2p/<peer id> part"
    return None


def _peer_ids(v: list[str]) -> str | None:
    from libp2p.peer.id import ID

    for p in v:
        try:
            ID.from_base58(p)
        except Exception:
            return f"{p!r} is not a peer id"
    return None if len(set(v)) == len(v) else "peer ids must be distinct"


def _log_level(v: str) -> str | None:
    levels = ("debug", "info", "warning", "error")
    return None if v.lower() in levels else f"must be one of {', '.join(levels)}"


SCHEMA: tuple[Setting, ...] = (
    Setting(
        "listen",
        list,
        ["/ip4/127.0.0.1/tcp/4001"],
        "Multiaddrs the libp2p host listens on. Loopback by default: use /ip4/0.0.0.0/tcp/4001 "
        "to accept peers from other machines. Port 0 picks a free port.",
        _multiaddrs,
    ),
    Setting(
        "bootstrap",
        list,
        [],
        "Peers to join at start, as full multiaddrs with /p2p/<peer id>. Each is retried, with "
        "pauses doubling up to network.bootstrap_max_backoff, until it answers.",
        _bootstrap,
    ),
    Setting(
        "psk_file",
        str,
        None,
        "File holding a 64-hex-character pre-shared key (go-ipfs swarm.key layout accepted; a "
        "relative path is under the data dir): only peers with the same key can connect.",
        optional=True,
    ),
    Setting(
        "metrics_port",
        int,
        None,
        "Serve Prometheus metrics on http://127.0.0.1:<port>/metrics (unset: off).",
        _range(1, 65535),
        optional=True,
    ),
    Setting("log_level", str, "info", "debug, info, warning or error.", _log_level),
    Setting(
        "shutdown_timeout",
        float,
        4.0,
        "Seconds allowed for a clean shutdown after SIGINT/SIGTERM.",
        _range(0.1, 60),
    ),
    Setting(
        "dht.bucket_size",
        int,
        20,
        "k: peers per Kademlia bucket (routing table).",
        _range(2, 64),
    ),
    Setting(
        "dht.alpha",
        int,
        3,
        "alpha: requests in flight per lookup step.",
        _range(1, 32),
    ),
    Setting(
        "dht.replication",
        int,
        5,
        "How many of the closest peers store each record (the owner keeps a copy too).",
        _range(1, 20),
    ),
    Setting(
        "dht.record_ttl",
        float,
        86400.0,
        "Seconds a stored record lives unless its owner republishes it.",
        _range(10, 7 * 86400),
    ),
    Setting(
        "dht.republish_interval",
        float,
        3600.0,
        "Seconds between an owner's republications of its records (keep well under record_ttl).",
        _range(1, 86400),
    ),
    Setting(
        "dht.refresh_interval",
        float,
        600.0,
        "Seconds between routing-table refreshes.",
        _range(1, 86400),
    ),
    Setting(
        "dht.max_value_size",
        int,
        65536,
        "Largest record value accepted, in bytes.",
        _range(1, 1 << 20),
        size=True,
    ),
    Setting(
        "dht.max_stores_per_second",
        float,
        200.0,
        "Records and provider entries one peer may make us store per second (burst: 5x this);"
        ' more are refused ("rate limited", counted against the peer) so no peer can fill'
        " our store.",
        _range(1, 1e6),
    ),
    Setting(
        "network.connect_timeout",
        float,
        5.0,
        "Seconds to wait for one outbound connection.",
        _range(0.1, 120),
    ),
    Setting(
        "network.request_timeout",
        float,
        5.0,
        "Seconds to wait for a peer's reply to one request, and for one write to a peer.",
        _range(0.1, 120),
    ),
    Setting(
        "network.bootstrap_max_backoff",
        float,
        30.0,
        "Longest pause between bootstrap retries, in seconds (backoff doubles up to this).",
        _range(0.1, 3600),
    ),
    Setting(
        "network.max_inflight_per_peer",
        int,
        64,
        "DHT requests served at once for one peer; more wait unread (flow control) rather than "
        "being dropped.",
        _range(1, 4096),
    ),
    Setting(
        "blobs.max_store_bytes",
        int,
        20 << 30,
        "Unpinned blobs are garbage-collected, least recently used first, above this size.",
        _range(1 << 20, 1 << 50),
        size=True,
    ),
    Setting(
        "blobs.fetch_timeout",
        float,
        600.0,
        "Seconds a blob fetch may take before it fails (chunks fetched so far are kept).",
        _range(1, 86400),
    ),
    Setting(
        "blobs.find_timeout",
        float,
        30.0,
        "Seconds a fetch looks for a first provider before it fails as not found (once one is "
        "known, blobs.fetch_timeout applies).",
        _range(0.1, 86400),
    ),
    Setting(
        "blobs.chunk_timeout",
        float,
        30.0,
        "Seconds to wait for one chunk from one provider.",
        _range(0.1, 600),
    ),
    Setting(
        "blobs.direct_io",
        bool,
        True,
        "Write and read chunk files with O_DIRECT, around the page cache (plain I/O where the "
        "file system refuses it).",
    ),
    Setting(
        "blobs.max_upload_rate",
        float,
        0.0,
        "Chunk data this node serves to others, in MiB/s over all peers (0: no limit).",
        _range(0, 1e6),
    ),
    Setting(
        "blobs.window",
        int,
        8,
        "Chunk requests in flight per provider during a fetch.",
        _range(1, 64),
    ),
    Setting(
        "ipc.max_frame",
        int,
        16 << 20,
        "Largest IPC frame accepted from a client, in bytes.",
        _range(1024, 1 << 30),
        size=True,
    ),
    Setting(
        "ipc.max_clients",
        int,
        256,
        "IPC connections served at once; more wait to be accepted.",
        _range(1, 65536),
    ),
    # -- membership (SWIM + Lifeguard heartbeats; docs/membership.md) --
    Setting(
        "membership.probe_interval",
        float,
        1.0,
        "Seconds between two probes by this node (one member each).",
        _range(0.05, 60),
    ),
    Setting(
        "membership.probe_timeout",
        float,
        0.4,
        "Seconds to wait for a direct ack before asking helpers (under probe_interval).",
        _range(0.01, 30),
    ),
    Setting(
        "membership.indirect_checks",
        int,
        3,
        "Members asked to probe on our behalf when a direct probe times out.",
        _range(0, 16),
    ),
    Setting(
        "membership.ring_probe_every",
        int,
        1,
        "Every k-th probe goes to our successor on the member ring (0: never; 1: every "
        "period, with a round-robin probe of its own every 4 periods).",
        _range(0, 64),
    ),
    Setting(
        "membership.suspicion_mult",
        float,
        0.6,
        "Minimum suspicion = this x max(1, log10 N) x probe_interval.",
        _range(0.1, 100),
    ),
    Setting(
        "membership.suspicion_scale_cap",
        float,
        1.0,
        "Cap on the log10 N factor of the minimum suspicion (the suspect is told directly).",
        _range(1, 10),
    ),
    Setting(
        "membership.suspicion_max_timeout_mult",
        float,
        2.0,
        "Maximum suspicion (no confirmations) = this x the minimum.",
        _range(1, 100),
    ),
    Setting(
        "membership.suspicion_confirmations",
        int,
        3,
        "Independent confirmations that shrink a suspicion to its minimum (Lifeguard's k).",
        _range(0, 64),
    ),
    Setting(
        "membership.gossip_interval",
        float,
        0.2,
        "Seconds between gossip rounds (sent only while updates are queued).",
        _range(0.01, 60),
    ),
    Setting(
        "membership.gossip_nodes",
        int,
        3,
        "Members each gossip round sends to.",
        _range(1, 32),
    ),
    Setting(
        "membership.retransmit_mult",
        int,
        4,
        "Each update is sent retransmit_mult x ceil(log10(N + 1)) times.",
        _range(1, 32),
    ),
    Setting(
        "membership.retransmit_scale_cap",
        int,
        3,
        "Cap on the ceil(log10(N + 1)) factor of retransmissions (push-pull repairs the rest).",
        _range(1, 10),
    ),
    Setting(
        "membership.push_pull_interval",
        float,
        30.0,
        "Seconds between push-pull exchanges with one random member (bucket digests, then the "
        "records of the buckets that differ; 0: only the one on join).",
        _range(0, 3600),
    ),
    Setting(
        "membership.max_packets_per_second",
        float,
        50.0,
        "Heartbeat packets accepted per second from one peer; more are refused and counted.",
        _range(1, 100000),
    ),
    Setting(
        "membership.slots",
        int,
        0,
        "Task slots this node offers (0: one per CPU core).",
        _range(0, 4096),
    ),
    # -- consensus (PBFT commit log; docs/pbft.md, "In the daemon") --
    Setting(
        "consensus.validators",
        list,
        [],
        "Genesis validator set, as peer ids in primary order (3f+1 of them). A node whose id is "
        "listed votes; every other node follows the committed log. Empty: consensus off.",
        _peer_ids,
    ),
    Setting(
        "consensus.checkpoint_interval",
        int,
        16,
        "K: a checkpoint every K entries (the same on every validator).",
        _range(1, 1024),
    ),
    Setting(
        "consensus.window",
        int,
        32,
        "L: sequence numbers accepted above the stable checkpoint (a multiple of K).",
        _range(1, 1024),
    ),
    Setting(
        "consensus.max_batch",
        int,
        64,
        "Transactions per pre-prepare (1: unbatched).",
        _range(1, 256),
    ),
    Setting(
        "consensus.max_inflight",
        int,
        4,
        "Batches the primary keeps in flight before it waits for one to commit.",
        _range(1, 64),
    ),
    Setting(
        "consensus.request_timeout",
        float,
        2.0,
        "Seconds a backup waits with a pending transaction and no progress before it suspects "
        "the primary (doubles per view change).",
        _range(0.05, 600),
    ),
    Setting(
        "consensus.view_change_timeout",
        float,
        2.0,
        "Seconds to wait for a new view once 2f+1 validators left the old one (doubles).",
        _range(0.05, 600),
    ),
    Setting(
        "consensus.status_interval",
        float,
        0.5,
        "Seconds between status broadcasts and retransmissions among validators.",
        _range(0.01, 60),
    ),
    Setting(
        "consensus.submit_timeout",
        float,
        30.0,
        "Seconds consensus.submit waits for the commit before it reports a timeout.",
        _range(0.1, 3600),
    ),
    Setting(
        "consensus.retry_interval",
        float,
        1.0,
        "Seconds between resends of an uncommitted transaction to every validator.",
        _range(0.05, 600),
    ),
    Setting(
        "consensus.client_lanes",
        int,
        256,
        "Transactions this node keeps in flight at once (each lane is one PBFT client id).",
        _range(1, 4096),
    ),
    Setting(
        "consensus.queue_size",
        int,
        1024,
        "Outbound PBFT packets queued per peer; more are dropped (and retransmitted).",
        _range(16, 65536),
    ),
)

_BY_KEY = {s.key: s for s in SCHEMA}


@dataclass(frozen=True, slots=True)
class DhtConfig:
    bucket_size: int
    alpha: int
    replication: int
    record_ttl: float
    republish_interval: float
    refresh_interval: float
    max_value_size: int
    max_stores_per_second: float


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    connect_timeout: float
    request_timeout: float
    bootstrap_max_backoff: float
    max_inflight_per_peer: int


@dataclass(frozen=True, slots=True)
class BlobsConfig:
    max_store_bytes: int
    fetch_timeout: float
    find_timeout: float
    chunk_timeout: float
    window: int
    direct_io: bool
    max_upload_rate: float


@dataclass(frozen=True, slots=True)
class MembershipConfig:
    probe_interval: float
    probe_timeout: float
    indirect_checks: int
    ring_probe_every: int
    suspicion_mult: float
    suspicion_scale_cap: float
    suspicion_max_timeout_mult: float
    suspicion_confirmations: int
    gossip_interval: float
    gossip_nodes: int
    retransmit_mult: int
    retransmit_scale_cap: int
    push_pull_interval: float
    max_packets_per_second: float
    slots: int


@dataclass(frozen=True, slots=True)
class ConsensusConfig:
    validators: tuple[str, ...]
    checkpoint_interval: int
    window: int
    max_batch: int
    max_inflight: int
    request_timeout: float
    view_change_timeout: float
    status_interval: float
    submit_timeout: float
    retry_interval: float
    client_lanes: int
    queue_size: int


@dataclass(frozen=True, slots=True)
class IpcConfig:
    max_frame: int
    max_clients: int


@dataclass(frozen=True, slots=True)
class Config:
    data_dir: Path
    listen: tuple[str, ...]
    bootstrap: tuple[str, ...]
    psk_file: Path | None
    metrics_port: int | None
    log_level: str
    shutdown_timeout: float
    dht: DhtConfig
    network: NetworkConfig
    ipc: IpcConfig
    blobs: BlobsConfig
    membership: MembershipConfig
    consensus: ConsensusConfig

    @property
    def key_path(self) -> Path:
        return self.data_dir / KEY_FILE

    @property
    def socket_path(self) -> Path:
        return self.data_dir / SOCKET_FILE

    @property
    def db_path(self) -> Path:
        return self.data_dir / DB_FILE

    @property
    def config_path(self) -> Path:
        return self.data_dir / CONFIG_FILE

    def read_psk(self) -> str | None:
        """The private-network key as 64 hex characters, or None when no psk_file is set."""
        if self.psk_file is None:
            return None
        try:
            text = self.psk_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"psk_file: cannot read {self.psk_file}: {exc.strerror}") from None
        # Accept the go-ipfs swarm.key layout too: the key is its last non-empty line.
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        key = lines[-1] if lines else ""
        try:
            raw = bytes.fromhex(key)
        except ValueError:
            raw = b""
        if len(raw) != 32:
            raise ConfigError(
                f"psk_file: {self.psk_file} must hold 64 hexadecimal characters (32 bytes)"
            )
        return key.lower()


def resolve_data_dir(flag: str | os.PathLike[str] | None, env: Mapping[str, str]) -> Path:
    """Data dir precedence: --data-dir, then P2PNODE_DATA_DIR, then ~/.p2pnode."""
    raw = flag if flag is not None else env.get(ENV_PREFIX + "DATA_DIR") or DEFAULT_DATA_DIR
    return Path(raw).expanduser().absolute()


def _env_name(key: str) -> str:
    return ENV_PREFIX + key.replace(".", "_").upper()


def _coerce(setting: Setting, raw: Any, source: str) -> Any:
    """Turn a raw value from one source into the setting's type, or raise ConfigError."""
    where = f"{setting.key} (from {source})"
    from_text = isinstance(raw, str) and setting.kind is not str
    if setting.optional and (raw is None or raw == "" or (from_text and raw.lower() == "off")):
        return None
    try:
        if setting.kind is list:
            if isinstance(raw, str):
                value: Any = [p.strip() for p in raw.split(",") if p.strip()]
            elif isinstance(raw, list | tuple) and all(isinstance(p, str) for p in raw):
                value = list(raw)
            else:
                raise TypeError("must be a list of strings")
        elif setting.kind is bool:
            if isinstance(raw, bool):
                value = raw
            elif isinstance(raw, str) and raw.lower() in ("1", "true", "yes", "on"):
                value = True
            elif isinstance(raw, str) and raw.lower() in ("0", "false", "no", "off"):
                value = False
            else:
                raise TypeError("must be true or false")
        elif setting.kind is int:
            if isinstance(raw, bool) or not isinstance(raw, int | str):
                raise TypeError("must be an integer")
            value = int(raw)
        elif setting.kind is float:
            if isinstance(raw, bool) or not isinstance(raw, int | float | str):
                raise TypeError("must be a number")
            value = float(raw)
            if value != value:
                raise TypeError("must be a number, not NaN")
        else:
            if not isinstance(raw, str):
                raise TypeError("must be a string")
            value = raw
    except (TypeError, ValueError) as exc:
        reason = str(exc) if isinstance(exc, TypeError) else f"must be {setting.kind.__name__}"
        raise ConfigError(f"config key {where}: {reason}, got {raw!r}") from None
    if setting.check is not None:
        reason = setting.check(value)
        if reason:
            raise ConfigError(f"config key {where}: {reason}, got {raw!r}")
    return value


def _flatten_toml(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in tree.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict):
            flat.update(_flatten_toml(value, key + "."))
        else:
            flat[key] = value
    return flat


def load_config(
    data_dir: Path,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build the effective config: ``overrides`` (flags) > env > config.toml > defaults.

    ``overrides`` maps dotted keys to values; a None value means "not given on the command line".
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = {s.key: s.default for s in SCHEMA}
    path = data_dir / CONFIG_FILE
    if path.exists():
        try:
            tree = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
        for key, raw in _flatten_toml(tree).items():
            setting = _BY_KEY.get(key)
            if setting is None:
                raise ConfigError(f"config key {key} (from {path}): unknown setting")
            values[key] = _coerce(setting, raw, str(path))
    for setting in SCHEMA:
        name = _env_name(setting.key)
        if name in env:
            values[setting.key] = _coerce(setting, env[name], f"${name}")
    for key, raw in (overrides or {}).items():
        if raw is None:
            continue
        setting = _BY_KEY.get(key)
        if setting is None:
            raise ConfigError(f"config key {key}: unknown setting")
        values[key] = _coerce(setting, raw, "command line")

    psk = values["psk_file"]
    psk_path = None
    if psk is not None:
        psk_path = Path(psk).expanduser()
        if not psk_path.is_absolute():
            psk_path = (data_dir / psk_path).absolute()
    cfg = Config(
        data_dir=data_dir,
        listen=tuple(values["listen"]),
        bootstrap=tuple(values["bootstrap"]),
        psk_file=psk_path,
        metrics_port=values["metrics_port"],
        log_level=values["log_level"].lower(),
        shutdown_timeout=values["shutdown_timeout"],
        dht=DhtConfig(**{k[4:]: v for k, v in values.items() if k.startswith("dht.")}),
        network=NetworkConfig(**{k[8:]: v for k, v in values.items() if k.startswith("network.")}),
        ipc=IpcConfig(**{k[4:]: v for k, v in values.items() if k.startswith("ipc.")}),
        blobs=BlobsConfig(**{k[6:]: v for k, v in values.items() if k.startswith("blobs.")}),
        membership=MembershipConfig(
            **{k[11:]: v for k, v in values.items() if k.startswith("membership.")}
        ),
        consensus=ConsensusConfig(
            **{
                k[10:]: tuple(v) if isinstance(v, list) else v
                for k, v in values.items()
                if k.startswith("consensus.")
            }
        ),
    )
    if not cfg.listen:
        raise ConfigError("config key listen: at least one listen multiaddr is needed")
    cons = cfg.consensus
    if cons.window < cons.checkpoint_interval or cons.window % cons.checkpoint_interval:
        raise ConfigError("config key consensus.window: must be a multiple of checkpoint_interval")
    if cfg.membership.probe_timeout >= cfg.membership.probe_interval:
        raise ConfigError(
            "config key membership.probe_timeout: must be shorter than membership.probe_interval"
        )
    if cfg.dht.republish_interval >= cfg.dht.record_ttl:
        raise ConfigError(
            "config key dht.republish_interval: must be shorter than dht.record_ttl "
            f"({cfg.dht.republish_interval:g} >= {cfg.dht.record_ttl:g}), or records expire"
        )
    return cfg


def _toml_value(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(f'"{v}"' for v in value) + "]"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def render_config_template(values: Mapping[str, Any] | None = None) -> str:
    """A commented config.toml listing every setting; ``values`` are written uncommented."""
    values = dict(values or {})
    lines = [
        "# p2pnode configuration.",
        "# Precedence: command-line flags > P2PNODE_<KEY> environment variables > this file >",
        "# defaults. Commented lines show the defaults; remove the '#' to change one.",
        "",
    ]
    section = ""
    for s in SCHEMA:
        sec, _, name = s.key.rpartition(".")
        if sec != section:
            lines += ["", f"[{sec}]"]
            section = sec
        lines.append(f"# {s.doc}  (env: {_env_name(s.key)})")
        if s.key in values:
            lines.append(f"{name} = {_toml_value(values[s.key])}")
        elif s.default is None:
            lines.append(f"# {name} = <unset>")
        else:
            lines.append(f"# {name} = {_toml_value(s.default)}")
    return "\n".join(lines) + "\n"


# -- the configuration reference (docs/configuration.md) ---------------------------------------

REFERENCE_COMMAND = "python docs/gen_config.py"

_SECTION_TITLES = {
    "": "Top level",
    "dht": "`[dht]`: records and Kademlia",
    "network": "`[network]`: connections and requests",
    "blobs": "`[blobs]`: the blob store and exchange (docs/blobs.md)",
    "ipc": "`[ipc]`: the local socket (docs/ipc.md)",
    "membership": "`[membership]`: SWIM + Lifeguard heartbeats (docs/membership.md)",
    "consensus": '`[consensus]`: the PBFT commit log (docs/pbft.md, "In the daemon")',
}


def _number_text(n: float) -> str:
    return str(int(n)) if n == int(n) else f"{n:g}"


def _size_text(n: float) -> str:
    for unit, shift in (("PiB", 50), ("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{_number_text(n / (1 << shift))} {unit}"
    return f"{_number_text(n)} B"


def _reference_default(s: Setting) -> str:
    if s.default is None:
        return "unset"
    text = f"`{_toml_value(s.default)}`"
    return f"{text} ({_size_text(s.default)})" if s.size else text


def _reference_range(s: Setting) -> str:
    if not isinstance(s.check, _Range):
        return ""
    lo, hi = s.check.lo, s.check.hi
    if s.size:
        return f"{_size_text(lo)} to {_size_text(hi)}"
    return f"{_number_text(lo)} to {_number_text(hi)}"


def config_reference_markdown() -> str:
    """docs/configuration.md: every setting of :data:`SCHEMA`, its default, bounds and meaning.

    The committed file is checked against this by tests/unit/test_config_reference.py, so the
    reference cannot drift from the code; regenerate it with :data:`REFERENCE_COMMAND`.
    """
    import textwrap  # here, not at the top: only this generator needs it

    intro = (
        "Every setting of the daemon, with its default, its bounds and what it does. Values come"
        " from, highest first: flags of `p2pnode daemon` (`--listen`, `--bootstrap`,"
        " `--psk-file`, `--metrics-port`, `--log-level`), `P2PNODE_<KEY>` environment variables"
        " (dots become underscores, upper case: `dht.replication` is"
        " `P2PNODE_DHT_REPLICATION`; a list is comma-separated), `config.toml` in the data dir"
        " (`dht.replication` is `replication` under `[dht]`), then the defaults. The data dir"
        " itself comes from `--data-dir`, then `P2PNODE_DATA_DIR`, then `~/.p2pnode`."
        " `p2pnode init` writes a `config.toml` listing every setting below, commented out at"
        " its default (but for the `--listen` and `--bootstrap` given to it).",
        "An *unset* setting is off; in `config.toml` or the environment an empty string (or"
        " `off`, where the value is a number) unsets it. Besides each key's bounds, start-up"
        " checks that `listen` is not empty, that `dht.republish_interval` is shorter than"
        " `dht.record_ttl`, that `membership.probe_timeout` is shorter than"
        " `membership.probe_interval` and that `consensus.window` is a multiple of"
        " `consensus.checkpoint_interval`. A bad value stops start-up with one line naming the"
        " key, its source and the reason, for example `config key dht.replication (from"
        " /n/config.toml): must be between 1 and 20, got 99`.",
    )
    lines = [
        "# Configuration reference",
        "",
        f"<!-- Generated from p2pnode/config.py (SCHEMA) by `{REFERENCE_COMMAND}`;",
        "     do not edit by hand. -->",
    ]
    for paragraph in intro:
        lines += ["", *textwrap.wrap(paragraph, 100, break_on_hyphens=False)]
    section = None
    for s in SCHEMA:
        sec = s.key.rpartition(".")[0]
        if sec != section:
            section = sec
            lines += [
                "",
                f"## {_SECTION_TITLES.get(sec, f'`[{sec}]`')}",
                "",
                "| key | default | bounds | meaning |",
                "|---|---|---|---|",
            ]
        # Escaped, or markdown would take "|" for a cell border and "<port>" for an HTML tag.
        doc = s.doc.replace("|", "\\|").replace("<", "\\<")
        lines.append(f"| `{s.key}` | {_reference_default(s)} | {_reference_range(s)} | {doc} |")
    return "\n".join(lines) + "\n"
