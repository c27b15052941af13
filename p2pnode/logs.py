"""Logging set-up for the daemon and the CLI: one stderr handler, libp2p's noise filtered.

One line per event, human (``time LEVEL service@peer: message (job J round R)``) or JSON
(``log_format = "json"``, ``--log-format json``), each with the service it comes from (the
logger name mapped by ``SERVICES``), this node's peer id, and the job and round where a call
names them (``extra={"job": ..., "round": ...}``). ``log_levels`` ("rounds=debug,dht=warning")
sets a level per service over ``log_level``.

py-libp2p logs every failed dial at ERROR ("Failed to open TCP stream: ..."), and a daemon
whose peer died redials it for as long as the swarm remembers it: left alone, that is a few
ERROR lines a second, forever. :class:`DialFailureSummary` passes the first failure to each
address as a WARNING, then at most one summary line per address per ``window`` saying how many
more failed, so the log stays bounded however long the peer stays away.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime

# Benign messages py-libp2p logs at WARNING in normal operation (field guide §2, §7.12, §7.17).
_NOISE = (
    "Failed to read DHT message from stream",
    "Error getting transport addresses",
    "MultiselectClient handshake",
    "Failed to open stream",
)


class _DropLibp2pNoise(logging.Filter):
    def __init__(self, chatty: bool = False) -> None:
        super().__init__()
        self.chatty = chatty  # log_levels asked for libp2p's INFO or DEBUG lines

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("libp2p") and record.levelno < logging.WARNING:
            return self.chatty  # libp2p is chatty at INFO; its warnings still show
        message = record.getMessage()
        return not any(message.startswith(n) for n in _NOISE)


_DIAL_FAILURE = "Failed to open TCP stream"
# trio: "all attempts to connect to 127.0.0.1:4001 failed"; a single attempt's OSError ends
# with the address tuple: "Connect call failed ('127.0.0.1', 4001)". Errno text varies by
# platform, so only the address is kept as the key.
_ADDRESS = re.compile(r"connect to (\S+) failed|\(([^()]*)\)\s*$")
#: Addresses remembered at once (a daemon that dialled many dead peers forgets the oldest).
MAX_ADDRESSES = 1024


class DialFailureSummary(logging.Filter):
    """The first failed dial to an address passes (as a WARNING); later ones are counted and
    reported in one line per address per ``window`` seconds (``record.created`` is the clock)."""

    def __init__(self, window: float = 60.0) -> None:
        super().__init__()
        self.window = window
        #: address -> (when its last line was let through, failures not reported since)
        self._seen: dict[str, tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.startswith(_DIAL_FAILURE):
            return True
        match = _ADDRESS.search(message)
        address = (match.group(1) or match.group(2)) if match else message
        seen = self._seen.get(address)
        now = record.created
        if seen is None:
            if len(self._seen) >= MAX_ADDRESSES:
                del self._seen[next(iter(self._seen))]
            self._seen[address] = (now, 0)
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg = f"{message} (later failures to this address: one line a minute)"
            record.args = ()
            return True
        since, quiet = seen
        if now - since < self.window:
            self._seen[address] = (since, quiet + 1)
            return False
        self._seen[address] = (now, 0)
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.msg = (
            f"{quiet + 1} more failed dials to {address} in the last {now - since:.0f} s;"
            f" still unreachable"
        )
        record.args = ()
        return True


#: Service names for ``log_levels`` and the ``service`` field: logger name prefixes, the most
#: specific first (p2pnode.network.dht is "dht", the rest of p2pnode.network is "network").
SERVICES: dict[str, tuple[str, ...]] = {
    "dht": ("p2pnode.network.dht",),
    "nat": ("p2pnode.network.nat", "p2pnode.network.mdns"),
    "network": ("p2pnode.network",),
    "blobs": ("p2pnode.blobs",),
    "membership": ("p2pnode.membership",),
    "consensus": ("p2pnode.consensus",),
    "rounds": ("p2pnode.rounds", "p2pnode.training"),
    "trust": ("p2pnode.trust",),
    "collectives": ("p2pnode.collectives",),
    "ipc": ("p2pnode.ipc",),
    "metrics": ("p2pnode.metrics", "p2pnode.service_metrics"),
    "daemon": ("p2pnode",),
    "libp2p": ("libp2p",),
}
_PREFIXES = sorted(
    ((prefix, name) for name, prefixes in SERVICES.items() for prefix in prefixes),
    key=lambda item: -len(item[0]),
)
LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("human", "json")


def service_of(logger: str) -> str:
    """The service a logger belongs to (``SERVICES``), or the logger's first part."""
    for prefix, name in _PREFIXES:
        if logger == prefix or logger.startswith(prefix + "."):
            return name
    return logger.split(".", 1)[0]


def parse_levels(text: str) -> dict[str, str]:
    """``"rounds=debug, dht=warning"`` -> {"rounds": "debug", "dht": "warning"}; ValueError
    naming the bad part."""
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, level = part.partition("=")
        name, level = name.strip(), level.strip().lower()
        if not sep or name not in SERVICES:
            raise ValueError(
                f"{part!r}: expected SERVICE=LEVEL, SERVICE one of {', '.join(SERVICES)}"
            )
        if level not in LEVELS:
            raise ValueError(f"{part!r}: the level must be one of {', '.join(LEVELS)}")
        out[name] = level
    return out


class _Context(logging.Filter):
    """Gives every record the fields both formats use: ``service``, ``peer_id``, ``job`` and
    ``round`` (None where they do not apply; a call sets job and round with ``extra=``)."""

    peer_id: str | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = service_of(record.name)
        record.peer_id = self.peer_id
        for field in ("job", "round"):
            if not hasattr(record, field):
                setattr(record, field, None)
        return True


_CONTEXT = _Context()


def set_peer_id(peer_id: str) -> None:
    """Name this node in every later line (the daemon knows its id once the key is loaded)."""
    _CONTEXT.peer_id = peer_id


class HumanFormatter(logging.Formatter):
    """``time LEVEL service@peer: message (job J round R)``, the peer id shortened; lines after
    an event's first are indented."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(where)s: %(message)s%(about)s")

    def format(self, record: logging.LogRecord) -> str:
        peer = getattr(record, "peer_id", None)
        service = getattr(record, "service", record.name)
        record.where = f"{service}@…{peer[-6:]}" if peer else service
        job, rnd = getattr(record, "job", None), getattr(record, "round", None)
        about = [f"job {job}"] if job is not None else []
        about += [f"round {rnd}"] if rnd is not None else []
        record.about = f" ({' '.join(about)})" if about else ""
        # An event starts at column 0; its continuation lines (a message with newlines, a
        # traceback) are indented, so a line-oriented reader still tells events apart.
        return super().format(record).replace("\n", "\n    ")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (UTC, ISO 8601), level, service, logger, peer_id, msg, and
    job, round, exc where they apply."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": getattr(record, "service", service_of(record.name)),
            "logger": record.name,
            "peer_id": getattr(record, "peer_id", None),
            "msg": record.getMessage(),
        }
        for field in ("job", "round"):
            value = getattr(record, field, None)
            if value is not None:
                out[field] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def configure(level: str, *, fmt: str = "human", levels: dict[str, str] | None = None) -> None:
    """One stderr handler for the whole process: ``fmt`` human or json, ``level`` for every
    service but those ``levels`` names (``log_levels`` in the config)."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else HumanFormatter())
    handler.addFilter(_CONTEXT)
    handler.addFilter(_DropLibp2pNoise(chatty=(levels or {}).get("libp2p") in ("debug", "info")))
    handler.addFilter(DialFailureSummary())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    lib = logging.getLogger("libp2p")
    lib.handlers[:] = [handler]
    lib.propagate = False
    lib.setLevel(logging.WARNING)
    # Every service's loggers get their level explicitly, so "daemon" (the p2pnode logger
    # itself) does not pass its level down to the services nested under it.
    for name, prefixes in SERVICES.items():
        chosen = (levels or {}).get(name)
        for prefix in prefixes:
            if chosen is not None:
                logging.getLogger(prefix).setLevel(chosen.upper())
            elif prefix != "libp2p":
                logging.getLogger(prefix).setLevel(level.upper())
