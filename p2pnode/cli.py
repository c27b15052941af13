"""The ``p2pnode`` command line: people's door to a daemon, over the IPC client.

Every failure a person can cause or meet (no daemon, missing key, bad multiaddr, bad config)
prints one line on stderr and exits non-zero (1 for errors, 2 for usage); tracebacks are for
bugs only. ``--json`` prints machine-readable results on stdout, and errors as one JSON object
on stderr: ``{"error": {"code": C, "message": M}}`` (C is the IPC error code, or ``usage``,
``config``, ``identity``, ``store``, ``error``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from p2pnode import __version__
from p2pnode.config import ConfigError, load_config, render_config_template, resolve_data_dir
from p2pnode.consensus import cli as consensus_cli
from p2pnode.identity import IdentityError, create_identity, peer_id_of
from p2pnode.ipc.client import Client
from p2pnode.ipc.errors import IpcError
from p2pnode.membership import cli as members_cli
from p2pnode.store import StoreError

EXIT_ERROR = 1
EXIT_USAGE = 2


class CliError(Exception):
    """A one-line message for stderr."""

    code = "error"


class UsageError(Exception):
    """The command line is wrong: ``parser`` prints its usage before the message (exit 2)."""

    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        super().__init__(message)
        self.parser = parser
        self.message = message


class _Parser(argparse.ArgumentParser):
    """Raises :class:`UsageError` instead of exiting, so ``main`` reports it (as JSON with
    ``--json``); subparsers are of this class too (argparse makes them of the parent's)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(self, message)


def _parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    # SUPPRESS: without it the subcommand's default would overwrite a global --json.
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print results as JSON"
    )

    p = _Parser(prog="p2pnode", description="Peer-to-peer training daemon")
    p.add_argument("--version", action="version", version=f"p2pnode {__version__}")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--data-dir", help="node data dir (default $P2PNODE_DATA_DIR or ~/.p2pnode)")
    where.add_argument("--socket", help="IPC socket path (default <data dir>/p2pnode.sock)")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    init = sub.add_parser("init", parents=[common], help="create the data dir, key and config")
    init.add_argument("--listen", action="append", help="listen multiaddr to write in config.toml")
    init.add_argument(
        "--bootstrap", action="append", help="bootstrap multiaddr to write in config.toml"
    )

    cfg = sub.add_parser("config", help="change a setting in config.toml")
    csub = cfg.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    cset = csub.add_parser(
        "set",
        parents=[common],
        help="set KEY (a dotted key from docs/configuration.md) to VALUE",
        description="Write one setting into <data dir>/config.toml, checked like at start-up; "
        "a running daemon sees it after a restart. A list setting takes several values; "
        "'off' or '' unsets an optional one.",
    )
    cset.add_argument("key", help="dotted setting key, e.g. listen or blobs.find_timeout")
    cset.add_argument("value", nargs="+", help="the new value (several for a list)")

    d = sub.add_parser("daemon", help="run the daemon in the foreground")
    d.add_argument("--listen", action="append", help="listen multiaddr (repeatable)")
    d.add_argument("--bootstrap", action="append", help="bootstrap peer multiaddr (repeatable)")
    d.add_argument("--psk-file", help="private network key file (64 hex characters)")
    d.add_argument("--metrics-port", type=int, help="serve /metrics on 127.0.0.1:PORT")
    d.add_argument("--log-level", help="debug, info, warning or error")
    d.add_argument("--init", action="store_true", help="initialise the data dir if needed")

    sub.add_parser("status", parents=[common], help="show the daemon's identity and state")
    sub.add_parser("peers", parents=[common], help="list connected peers")
    c = sub.add_parser("connect", parents=[common], help="connect to a peer")
    c.add_argument("multiaddr", help="the peer's address, ending in /p2p/PEER_ID")
    dc = sub.add_parser("disconnect", parents=[common], help="close the connection to a peer")
    dc.add_argument("peer_id", metavar="PEER_ID", help="the peer's id (as `peers` lists it)")

    dht = sub.add_parser("dht", help="DHT records and providers")
    dsub = dht.add_subparsers(dest="dht_command", required=True, metavar="ACTION")
    put = dsub.add_parser(
        "put", parents=[common], help="store VALUE under KEY in the DHT (two arguments)"
    )
    put.add_argument("key", metavar="KEY", help="the record's name")
    # Not a required group: a missing VALUE is reported by main, with a hint for KEY=VALUE.
    src = put.add_mutually_exclusive_group()
    src.add_argument("value", metavar="VALUE", nargs="?", help="the value, as text")
    src.add_argument("-f", "--file", help="read the value from FILE ('-' for stdin)")
    put.set_defaults(kv_parser=put)
    get = dsub.add_parser("get", parents=[common], help="read KEY from the DHT")
    get.add_argument("key", metavar="KEY", help="the record's name")
    get.add_argument("-o", "--output", help="write the value to FILE (default: stdout)")
    prov = dsub.add_parser("provide", parents=[common], help="announce that we hold KEY")
    prov.add_argument("key", metavar="KEY", help="the key to announce (a blob key, say)")
    fp = dsub.add_parser("find-providers", parents=[common], help="who holds KEY")
    fp.add_argument("key", metavar="KEY", help="the key to look for")
    fpeer = dsub.add_parser("find-peer", parents=[common], help="addresses of a peer")
    fpeer.add_argument("peer_id", metavar="PEER_ID", help="the peer's id")

    blob = sub.add_parser("blob", help="content-addressed blobs")
    bsub = blob.add_subparsers(dest="blob_command", required=True, metavar="ACTION")
    bput = bsub.add_parser("put", parents=[common], help="store FILE ('-' for stdin)")
    bput.add_argument("file", metavar="FILE", help="the file to store ('-' reads stdin)")
    bput.add_argument(
        "--media-type",
        default="application/octet-stream",
        help="what the bytes are, kept with the blob (default: %(default)s)",
    )
    bput.add_argument("--no-pin", action="store_true", help="let garbage collection remove it")
    bget = bsub.add_parser("get", parents=[common], help="fetch KEY into FILE")
    bget.add_argument("key", help="the blob's key")
    bget.add_argument("-o", "--output", required=True, help="file to write ('-' for stdout)")
    bget.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="give up after SECONDS, looking for providers included (default: the daemon's "
        "blobs.find_timeout, 30 s, to find one and blobs.fetch_timeout for the whole)",
    )
    bstat = bsub.add_parser("stat", parents=[common], help="what this node knows of KEY")
    bstat.add_argument("key", metavar="KEY", help="the blob's key")
    for name in ("pin", "unpin"):
        bp = bsub.add_parser(name, parents=[common], help=f"{name} KEY")
        bp.add_argument("key", metavar="KEY", help="the blob's key")

    ptr = sub.add_parser("ptr", help="named pointers to blobs")
    psub = ptr.add_subparsers(dest="ptr_command", required=True, metavar="ACTION")
    pset = psub.add_parser("set", parents=[common], help="point NAME at KEY")
    pset.add_argument("name", help="the pointer's name")
    pset.add_argument("key", help="the blob key it points at")
    pset.add_argument(
        "--seq",
        type=int,
        metavar="N",
        help="the version: must be above the last one"
        " (default: the clock in ms, past any version held)",
    )
    pget = psub.add_parser("get", parents=[common], help="read a pointer")
    pget.add_argument("name", help="the pointer's name")
    pget.add_argument(
        "--owner",
        help="who set the pointer: a peer id, a node's name in this node's swarm dir "
        "(node-3: the peer id in ../node-3/identity.key) or a data dir (default: this node; "
        "a pointer is found only under its owner's peer id)",
    )

    sw = sub.add_parser("swarm", help="run N local daemons on 127.0.0.1")
    sw.add_argument(
        "--nodes",
        type=int,
        default=5,
        metavar="N",
        help="how many daemons to run (default: %(default)s)",
    )
    sw.add_argument("--dir", required=True, help="parent dir of node-1 ... node-N")
    sw.add_argument(
        "--metrics-base-port", type=int, metavar="BASE", help="node i serves metrics on BASE+i"
    )
    sw.add_argument(
        "--validators",
        type=int,
        default=0,
        metavar="K",
        help="node-1..K form the genesis PBFT committee (default: %(default)s, consensus off;"
        " 4 tolerates one faulty validator)",
    )
    members_cli.add_parser(sub, common)
    consensus_cli.add_parsers(sub, common)
    return p


def _print(args: argparse.Namespace, result: Any, human: str) -> None:
    if args.json:
        print(json.dumps(result, indent=2, default=_json_default))
    else:
        print(human)


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return {"hex": value.hex()}
    raise TypeError(type(value).__name__)


def cmd_init(args: argparse.Namespace) -> int:
    data_dir = resolve_data_dir(args.data_dir, os.environ)
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    cfg_path = data_dir / "config.toml"
    key_path = data_dir / "identity.key"
    created = []
    if not key_path.exists():
        create_identity(key_path)
        created.append("identity.key")
    if not cfg_path.exists():
        values: dict[str, Any] = {}
        if args.listen:
            values["listen"] = args.listen
        if args.bootstrap:
            values["bootstrap"] = args.bootstrap
        cfg_path.write_text(render_config_template(values))
        created.append("config.toml")
    load_config(data_dir)  # report a bad existing config now, not at daemon start
    from p2pnode.identity import load_identity_file

    peer_id = peer_id_of(load_identity_file(key_path)).to_base58()
    # An existing config.toml is never rewritten: flags that differ from it were not applied.
    ignored = {}
    if "config.toml" not in created and (args.listen or args.bootstrap):
        cfg = load_config(data_dir, env={})  # what the file says, whatever $P2PNODE_* say
        for key, given, current in (
            ("listen", args.listen, cfg.listen),
            ("bootstrap", args.bootstrap, cfg.bootstrap),
        ):
            if given and list(given) != list(current):
                ignored[key] = {"given": list(given), "config": list(current)}
    result = {"data_dir": str(data_dir), "peer_id": peer_id, "created": created}
    if ignored:
        result["ignored"] = ignored
    what = ", ".join(created) if created else "nothing (already initialised)"
    _print(args, result, f"{data_dir}: created {what}\npeer id {peer_id}")
    if not ignored:
        return 0
    for key, v in ignored.items():
        words = " ".join(v["given"])
        print(
            f"p2pnode: init: {cfg_path} already exists, so --{key} was not applied "
            f"(the file says {key} = {_toml_list(v['config'])}). To change it: "
            f"p2pnode --data-dir {data_dir} config set {key} {words}  (or edit the file)",
            file=sys.stderr,
        )
    return EXIT_ERROR


def _toml_list(values: list[str]) -> str:
    return "[" + ", ".join(f'"{v}"' for v in values) + "]"


def cmd_config(args: argparse.Namespace) -> int:
    from p2pnode.config.edit import set_config_value

    data_dir = resolve_data_dir(args.data_dir, os.environ)
    value = set_config_value(data_dir, args.key, args.value)
    shown = "unset" if value is None else json.dumps(value)
    result = {"data_dir": str(data_dir), "key": args.key, "value": value}
    _print(
        args,
        result,
        f"{data_dir / 'config.toml'}: {args.key} = {shown} (restart the daemon to apply it)",
    )
    return 0


def cmd_daemon(args: argparse.Namespace) -> int:
    data_dir = resolve_data_dir(args.data_dir, os.environ)
    if args.init and not (data_dir / "identity.key").exists():
        cmd_init(
            argparse.Namespace(data_dir=str(data_dir), listen=None, bootstrap=None, json=False)
        )
    overrides = {
        "listen": args.listen,
        "bootstrap": args.bootstrap,
        "psk_file": args.psk_file,
        "metrics_port": args.metrics_port,
        "log_level": args.log_level,
    }
    cfg = load_config(data_dir, overrides=overrides)
    from p2pnode.daemon import DaemonStartError, run_daemon

    try:
        return run_daemon(cfg)
    except DaemonStartError as exc:
        raise CliError(f"daemon failed to start: {exc}") from None


def _client(args: argparse.Namespace) -> Client:
    return Client(socket_path=args.socket, data_dir=args.data_dir)


def cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as c:
        s = c.status()
    lines = [
        f"peer id      {s['peer_id']}",
        f"version      {s['version']}",
        f"pid          {s['pid']}",
        f"uptime       {s['uptime']:.1f} s",
        f"peers        {s['connected_peers']} connected, "
        f"{s['routing_table_size']} in routing table",
        f"records      {s['records']}",
        "addresses    " + "\n             ".join(s["addrs"]),
    ]
    _print(args, s, "\n".join(lines))
    return 0


def cmd_peers(args: argparse.Namespace) -> int:
    with _client(args) as c:
        result = c.peers()
    rows = [f"{p['peer_id']}  {' '.join(p['addrs'])}" for p in result["peers"]]
    _print(args, result, "\n".join(rows) if rows else "(no peers connected)")
    return 0


def cmd_connect(args: argparse.Namespace) -> int:
    with _client(args) as c:
        result = c.connect(args.multiaddr)
    _print(args, result, f"connected to {result['peer_id']}")
    return 0


def cmd_disconnect(args: argparse.Namespace) -> int:
    with _client(args) as c:
        r = c.disconnect(args.peer_id)
    what = "disconnected from" if r["was_connected"] else "was not connected to"
    _print(args, r, f"{what} {r['peer_id']}")
    return 0


def _read_value(args: argparse.Namespace) -> bytes:
    if args.file is None:
        return args.value.encode()
    if args.file == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(args.file).read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {args.file}: {exc.strerror}") from None


def cmd_dht(args: argparse.Namespace) -> int:
    with _client(args) as c:
        if args.dht_command == "put":
            r = c.dht_put(args.key, _read_value(args))
            _print(args, r, f"stored {r['key']} (seq {r['seq']}) on {r['replicas']} peers")
        elif args.dht_command == "get":
            r = c.dht_get(args.key)
            if args.output:
                Path(args.output).write_bytes(r["value"])
                _print(args, {**r, "value": None, "output": args.output}, f"wrote {args.output}")
            elif args.json:
                _print(args, r, "")
            else:
                sys.stdout.buffer.write(r["value"])
                if sys.stdout.isatty() or not r["value"].endswith(b"\n"):
                    sys.stdout.buffer.write(b"\n")
                sys.stdout.flush()
        elif args.dht_command == "provide":
            r = c.dht_provide(args.key)
            _print(args, r, f"announced {r['key']} to {r['replicas']} peers")
        elif args.dht_command == "find-providers":
            r = c.dht_find_providers(args.key)
            rows = [f"{p['peer_id']}  {' '.join(p['addrs'])}" for p in r["providers"]]
            _print(args, r, "\n".join(rows) if rows else "(no providers found)")
            if not rows:
                return EXIT_ERROR
        elif args.dht_command == "find-peer":
            r = c.dht_find_peer(args.peer_id)
            _print(args, r, "\n".join(r["addrs"]))
    return 0


def _human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"


def _fetch_with_progress(
    args: argparse.Namespace, key: str, call: Callable[[Any], dict[str, Any]]
) -> dict[str, Any]:
    """Run ``call`` (a request that fetches ``key``) in one thread while another polls
    blob.stat to say what it is doing on stderr: looking for providers (one line, so a blob
    nobody holds does not look like a hang), then a progress bar on a terminal."""
    result: dict[str, Any] = {}
    failure: list[BaseException] = []
    timeout = getattr(args, "timeout", None)
    # The daemon bounds the fetch (by --timeout or its config); the socket wait must outlast it.
    wait = (timeout if timeout is not None else 86400.0) + 30.0

    def work() -> None:
        try:
            with Client(socket_path=args.socket, data_dir=args.data_dir, timeout=wait) as c:
                result.update(call(c))
        except BaseException as exc:
            failure.append(exc)

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    tty = sys.stderr.isatty() and not args.json
    said_looking = drew = False
    with _client(args) as poll:
        while worker.is_alive():
            worker.join(0.2)
            if not worker.is_alive() or args.json:
                continue
            try:
                s = poll.blob_stat(key)
            except IpcError:
                if not said_looking:  # the manifest has not arrived yet
                    bound = f"up to {timeout:g} s" if timeout else "--timeout S sets the wait"
                    print(
                        f"looking for providers of {key}… ({bound})",
                        end="" if tty else "\n",
                        file=sys.stderr,
                        flush=True,
                    )
                    said_looking, drew = True, drew or tty
                continue
            if tty:
                drew = True
                done = s["local_chunks"] / max(1, s["chunks"])
                bar = "#" * int(30 * done)
                print(
                    f"\r[{bar:<30}] {100 * done:5.1f}% of {_human_size(s['size'])}\033[K",
                    end="",
                    file=sys.stderr,
                    flush=True,
                )
    if drew:
        print(file=sys.stderr)
    if failure:
        raise failure[0]
    return result


def cmd_blob(args: argparse.Namespace) -> int:
    if args.blob_command == "put":
        path = Path(args.file)
        if args.file != "-" and not path.is_file():
            # Checked before connecting: the answer does not depend on the daemon.
            if path.is_dir():
                raise CliError(f"{args.file} is a directory: blob put stores one file")
            raise CliError(f"{args.file}: no such file")
        with _client(args) as c:
            if args.file == "-":
                stdin = iter(lambda: sys.stdin.buffer.read(1 << 20), b"")
                r = c.blob_upload(stdin, media_type=args.media_type, pin=not args.no_pin)
            else:
                r = c.blob_put(path=path, media_type=args.media_type, pin=not args.no_pin)
        _print(args, r, r["key"])
        return 0
    if args.blob_command == "get":
        if args.timeout is not None and not 0 < args.timeout <= 86400:
            raise CliError("--timeout must be more than 0 and at most 86400 seconds")
        if args.output != "-":
            # One request: the daemon fetches the blob and writes the file itself.
            r = _fetch_with_progress(
                args,
                args.key,
                lambda c: c.blob_get(args.key, path=args.output, timeout=args.timeout),
            )
            _print(args, r, f"wrote {_human_size(r['size'])} to {args.output}")
            return 0
        stat = _fetch_with_progress(
            args, args.key, lambda c: c.blob_fetch(args.key, timeout=args.timeout)
        )
        with _client(args) as c:
            offset = 0
            while offset < stat["size"]:
                data = c.blob_read(args.key, offset, 4 << 20)["data"]
                sys.stdout.buffer.write(data)
                offset += len(data)
            sys.stdout.flush()
        return 0
    with _client(args) as c:
        if args.blob_command == "stat":
            r = c.blob_stat(args.key)
        elif args.blob_command == "pin":
            r = c.blob_pin(args.key)
        else:
            r = c.blob_unpin(args.key)
    state = "complete" if r["complete"] else f"{r['local_chunks']}/{r['chunks']} chunks"
    human = (
        f"key         {r['key']}\n"
        f"size        {_human_size(r['size'])} ({r['size']} bytes)\n"
        f"chunks      {r['chunks']} ({state})\n"
        f"pinned      {'yes' if r['pinned'] else 'no'}\n"
        f"media type  {r['media_type']}"
    )
    _print(args, r, human)
    return 0


def _owner_peer_id(args: argparse.Namespace) -> str | None:
    """``--owner`` as a peer id: given as one, or read from a node's identity.key, the node
    named like a sibling of this data dir (``node-3`` in a ``p2pnode swarm`` dir) or by path."""
    owner = args.owner
    if owner is None:
        return None
    from libp2p.peer.id import ID

    from p2pnode.identity import load_identity_file

    try:
        ID.from_base58(owner)
        return str(owner)
    except Exception:
        pass
    here = resolve_data_dir(args.data_dir, os.environ) if args.socket is None else None
    places = [Path(owner).expanduser()]
    if here is not None and "/" not in owner:
        places.insert(0, here.parent / owner)
    for place in places:
        key = place / "identity.key"
        if key.is_file():
            return peer_id_of(load_identity_file(key)).to_base58()
    tried = " or ".join(str(p / "identity.key") for p in places)
    raise CliError(
        f"--owner {owner}: not a peer id, and there is no {tried}; give the owner's peer id "
        "(its 'p2pnode status' shows it) or the name of a node in this node's swarm dir"
    )


def cmd_ptr(args: argparse.Namespace) -> int:
    with _client(args) as c:
        if args.ptr_command == "set":
            r = c.ptr_set(args.name, args.key, seq=args.seq)
            _print(args, r, f"{r['pointer']} -> {r['key']} (seq {r['seq']})")
        else:
            r = c.ptr_get(args.name, owner=_owner_peer_id(args))
            _print(args, r, r["key"])
    return 0


def cmd_swarm(args: argparse.Namespace) -> int:
    from p2pnode.swarm import SwarmError, run_swarm

    try:
        return run_swarm(
            nodes=args.nodes,
            parent=Path(args.dir),
            metrics_base_port=args.metrics_base_port,
            validators=args.validators,
        )
    except SwarmError as exc:
        raise CliError(f"swarm: {exc}") from None


COMMANDS = {
    "init": cmd_init,
    "config": cmd_config,
    "daemon": cmd_daemon,
    "status": cmd_status,
    "peers": cmd_peers,
    "connect": cmd_connect,
    "disconnect": cmd_disconnect,
    "dht": cmd_dht,
    "swarm": cmd_swarm,
    "blob": cmd_blob,
    "ptr": cmd_ptr,
    "members": lambda args: members_cli.cmd_members(args, _client),
    "consensus": lambda args: consensus_cli.cmd_consensus(args, _client),
    "log": lambda args: consensus_cli.cmd_log(args, _client),
}


def _check_key_value(args: argparse.Namespace) -> None:
    """``dht put`` and ``consensus submit`` take KEY VALUE: a lone KEY=VALUE gets a hint."""
    parser = getattr(args, "kv_parser", None)
    if parser is None or args.value is not None or getattr(args, "file", None) is not None:
        return
    if "=" in args.key:
        key, _, value = args.key.partition("=")
        raise UsageError(
            parser,
            f"give KEY and VALUE as two arguments: {parser.prog} {key} {value or 'VALUE'}",
        )
    alt = " (or -f FILE)" if hasattr(args, "file") else ""
    raise UsageError(parser, f"give a VALUE after KEY{alt}")


def _error_code(exc: Exception) -> str:
    if isinstance(exc, (IpcError, CliError)):
        return exc.code
    return {ConfigError: "config", IdentityError: "identity", StoreError: "store"}.get(
        type(exc), "error"
    )


def _report(as_json: bool, code: str, message: str) -> None:
    """One error on stderr: a line for people, or ``{"error": {...}}`` for ``--json``."""
    if as_json:
        print(json.dumps({"error": {"code": code, "message": message}}), file=sys.stderr)
    else:
        print(f"p2pnode: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Before parsing succeeds there is no namespace to ask: `--json` anywhere before `--`.
    wants_json = "--json" in argv[: argv.index("--")] if "--" in argv else "--json" in argv
    try:
        args = _parser().parse_args(argv)
        _check_key_value(args)
    except UsageError as exc:
        if wants_json:
            _report(True, "usage", f"{exc.parser.prog}: {exc.message}")
        else:
            exc.parser.print_usage(sys.stderr)
            print(f"{exc.parser.prog}: error: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    # `--json` may come before or after the subcommand.
    try:
        return COMMANDS[args.command](args)
    except (CliError, ConfigError, IdentityError, IpcError, StoreError) as exc:
        _report(args.json, _error_code(exc), str(exc))
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_ERROR


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main())
