"""Every setting of the daemon: its dotted key, type, default, check and line of documentation.

:data:`SCHEMA` is the one source the loader (:mod:`p2pnode.config.load`), the ``config.toml``
template and the reference ``docs/configuration.md`` (:mod:`p2pnode.config.render`) are built
from. The table is long because the daemon has many knobs; each entry is data, not logic.
"""

from __future__ import annotations

from pathlib import Path

from p2pnode.config.collectives_schema import COLLECTIVES_SCHEMA
from p2pnode.config.http_schema import HTTP_SCHEMA
from p2pnode.config.nat_schema import NAT_SCHEMA
from p2pnode.config.setting import ConfigError, Setting, _range
from p2pnode.config.training_schema import TRAINING_SCHEMA
from p2pnode.config.trust_schema import TRUST_SCHEMA

DEFAULT_DATA_DIR = Path("~/.p2pnode")
CONFIG_FILE = "config.toml"
KEY_FILE = "identity.key"
SOCKET_FILE = "p2pnode.sock"
DB_FILE = "node.db"
ENV_PREFIX = "P2PNODE_"

# ConfigError is re-exported: the loader and editor take it from here with the table.
__all__ = [
    "CONFIG_FILE",
    "DB_FILE",
    "DEFAULT_DATA_DIR",
    "ENV_PREFIX",
    "KEY_FILE",
    "SCHEMA",
    "SOCKET_FILE",
    "ConfigError",
    "Setting",
]


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


def _announce(v: list[str]) -> str | None:
    reason = _multiaddrs(v)
    if reason:
        return reason
    for a in v:
        if "/p2p/" in a:
            return f"{a!r}: give the address without /p2p/ (the node adds its own peer id)"
        if a.startswith(("/ip4/0.0.0.0/", "/ip6/::/")):
            return f"{a!r} is a wildcard: announce an address peers can dial"
    return None


def _peer_ids(v: list[str]) -> str | None:
    from libp2p.peer.id import ID

    for p in v:
        try:
            ID.from_base58(p)
        except Exception:
            return f"{p!r} is not a peer id"
    return None if len(set(v)) == len(v) else "peer ids must be distinct"


def _log_format(v: str) -> str | None:
    return None if v in ("human", "json") else "must be human or json"


def _log_levels(v: str) -> str | None:
    from p2pnode.logs import parse_levels

    try:
        parse_levels(v)
    except ValueError as exc:
        return str(exc)
    return None


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
        "announce",
        list,
        [],
        "Extra multiaddrs advertised to peers (identify, DHT peer records) and shown by status, "
        "for addresses this node cannot see on its own interfaces, such as a public IP or a "
        "port forwarded by a NAT (/ip4/203.0.113.7/tcp/4001). A wildcard listen address is "
        "advertised as the host's interface addresses either way.",
        _announce,
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
        "log_format",
        str,
        "human",
        "human (one readable line per event) or json (one JSON object per line, for log"
        " collectors).",
        _log_format,
    ),
    Setting(
        "log_levels",
        str,
        "",
        "Levels per service over log_level, as SERVICE=LEVEL pairs separated by commas (e.g."
        ' "rounds=debug,dht=warning"); services: dht, nat, network, blobs, membership,'
        " consensus, rounds, trust, collectives, ipc, metrics, daemon, libp2p.",
        _log_levels,
    ),
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
        "blobs.max_model_bytes",
        int,
        0,
        "Quota of model blobs (kind model): above it GC removes them, unpinned first, oldest "
        "first (0: no quota beyond blobs.max_store_bytes).",
        _range(0, 1 << 50),
        size=True,
    ),
    Setting(
        "blobs.max_update_bytes",
        int,
        0,
        "Quota of training update blobs (kind update), enforced as blobs.max_model_bytes.",
        _range(0, 1 << 50),
        size=True,
    ),
    Setting(
        "blobs.max_user_bytes",
        int,
        0,
        "Quota of user blobs (kind user, what blob put stores), enforced as blobs.max_model_bytes.",
        _range(0, 1 << 50),
        size=True,
    ),
    Setting(
        "blobs.keep_models",
        int,
        3,
        "Model blobs of a training job kept once a round is committed (the latest ones, plus "
        "every model validators certified).",
        _range(1, 1 << 20),
    ),
    Setting(
        "blobs.keep_update_rounds",
        int,
        2,
        "Evidence period in rounds: update blobs of rounds <= committed round - this are "
        "removed once a round of their job is committed.",
        _range(0, 1 << 20),
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
        "IPC connections served at once; a new client then evicts the one idle longest.",
        _range(1, 65536),
    ),
    Setting(
        "ipc.idle_timeout",
        float,
        600.0,
        "Seconds an IPC connection may stay idle before the daemon closes it (clients reconnect).",
        _range(1, 1e6),
    ),
    Setting(
        "ipc.frame_timeout",
        float,
        30.0,
        "Seconds an IPC client may stall in the middle of a frame before it is disconnected.",
        _range(0.1, 3600),
    ),
    Setting(
        "ipc.max_buffered",
        int,
        64 << 20,
        "Bytes of partial IPC frames held across all clients (at least ipc.max_frame is used).",
        _range(1 << 16, 1 << 34),
        size=True,
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
    Setting(
        "consensus.fault",
        str,
        "",
        "For tests only: equivocate makes this validator, as primary, follow each pre-prepare "
        "with a conflicting one (another batch for the same slot), signed with its key.",
        lambda v: None if v in ("", "equivocate") else "must be '' or equivocate",
    ),
)

SCHEMA = SCHEMA + TRAINING_SCHEMA + COLLECTIVES_SCHEMA + TRUST_SCHEMA + NAT_SCHEMA + HTTP_SCHEMA

_BY_KEY = {s.key: s for s in SCHEMA}
