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
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn

from p2pnode import __version__
from p2pnode.cli.blobs import add_parsers as add_blob_parsers
from p2pnode.cli.blobs import cmd_blob, cmd_ptr
from p2pnode.cli.doctor import add_parsers as add_doctor_parsers
from p2pnode.cli.doctor import cmd_doctor
from p2pnode.cli.groups import add_parsers as add_group_parsers
from p2pnode.cli.groups import cmd_group
from p2pnode.cli.jobs import add_parsers as add_job_parsers
from p2pnode.cli.jobs import cmd_job, cmd_model
from p2pnode.cli.join import add_parsers as add_join_parsers
from p2pnode.cli.join import apply_to_new_config, cmd_join, cmd_join_token
from p2pnode.cli.support import CliError
from p2pnode.cli.support import client as _client
from p2pnode.cli.support import print_result as _print
from p2pnode.cli.trust import COMMANDS as TRUST_COMMANDS
from p2pnode.cli.trust import add_parsers as add_trust_parsers
from p2pnode.config import ConfigError, load_config, render_config_template, resolve_data_dir
from p2pnode.config.join import decode_token
from p2pnode.consensus import cli as consensus_cli
from p2pnode.datadir import PRIVATE_UMASK, write_private
from p2pnode.identity import IdentityError, create_identity, peer_id_of
from p2pnode.ipc.errors import IpcError
from p2pnode.membership import cli as members_cli
from p2pnode.store import StoreError

EXIT_ERROR = 1
EXIT_USAGE = 2


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
    init.add_argument(
        "--announce",
        action="append",
        metavar="MULTIADDR",
        help="an address peers should dial that this machine cannot see itself, such as a "
        "public IP (repeatable; written in config.toml)",
    )
    init.add_argument(
        "--join",
        metavar="TOKEN",
        help="join the swarm (and committee) of the token `p2pnode join-token` printed",
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
    d.add_argument("--announce", action="append", help="extra advertised multiaddr (repeatable)")
    d.add_argument("--psk-file", help="private network key file (64 hex characters)")
    d.add_argument("--metrics-port", type=int, help="serve /metrics on 127.0.0.1:PORT")
    d.add_argument(
        "--http-port", type=int, help="serve the live web view on 127.0.0.1:PORT (http.port)"
    )
    d.add_argument("--log-level", help="debug, info, warning or error")
    d.add_argument(
        "--log-format", choices=("human", "json"), help="human (the default) or json lines"
    )
    d.add_argument(
        "--mdns", action="store_true", help="find daemons on this LAN by mDNS (discovery.mdns)"
    )
    d.add_argument("--init", action="store_true", help="initialise the data dir if needed")

    sub.add_parser("status", parents=[common], help="show the daemon's identity and state")
    sub.add_parser("peers", parents=[common], help="list connected peers")
    c = sub.add_parser("connect", parents=[common], help="connect to a peer")
    c.add_argument("multiaddr", help="the peer's address, ending in /p2p/PEER_ID")
    dc = sub.add_parser("disconnect", parents=[common], help="close the connection to a peer")
    dc.add_argument("peer_id", metavar="PEER_ID", help="the peer's id (as `peers` lists it)")
    pu = sub.add_parser(
        "punch", parents=[common], help="hole-punch a direct connection to a relayed peer"
    )
    pu.add_argument("peer_id", metavar="PEER_ID", help="a peer `peers` lists as relayed")

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

    add_blob_parsers(sub, common)

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
    add_join_parsers(sub, common)
    members_cli.add_parser(sub, common)
    add_doctor_parsers(sub, common)
    consensus_cli.add_parsers(sub, common)
    add_job_parsers(sub, common)
    add_group_parsers(sub, common)
    add_trust_parsers(sub, common)
    _add_demo_parser(sub, common)
    return p


def _add_demo_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    from p2pnode.demo import DEMO_ATTACKS
    from p2pnode.training.aggregation import RULE_NAMES
    from p2pnode.training.compression import COMPRESSION_KINDS

    demo = sub.add_parser(
        "demo",
        parents=[common],
        help="train on the digits with a local swarm, start to finish",
        description="Start a local swarm, train a job on the shipped digits (non-IID shards) "
        "with a live view, compare with a centralized baseline, write demo.png, stop the swarm.",
    )
    demo.add_argument("--nodes", type=int, default=8, help="daemons (default: %(default)s)")
    demo.add_argument(
        "--validators", type=int, default=4, help="committee size (default: %(default)s)"
    )
    demo.add_argument("--rounds", type=int, default=20, help="rounds (default: %(default)s)")
    demo.add_argument(
        "--strategy",
        choices=("fedavg", "diloco"),
        default="fedavg",
        help="fedavg (outer SGD, lr 1) or diloco (outer SGD, Nesterov momentum 0.9, lr 0.7)",
    )
    demo.add_argument(
        "--compression",
        choices=COMPRESSION_KINDS,
        default="none",
        help="how updates travel (default: %(default)s)",
    )
    demo.add_argument(
        "--rule",
        choices=RULE_NAMES,
        help="aggregation rule (default: fedavg, or trimmed_mean with attackers)",
    )
    demo.add_argument(
        "--attackers",
        type=int,
        default=0,
        metavar="N",
        help="N nodes send corrupted updates, see --attack (default: %(default)s)",
    )
    demo.add_argument(
        "--attack",
        choices=DEMO_ATTACKS,
        default="sign_flip",
        help="what the attackers send: sign_flip (x10), or an update crafted to hide among the "
        "honest ones (alie, ipm with epsilon 0.5, min_max, min_sum, mimic) (default: %(default)s)",
    )
    demo.add_argument("--seed", type=int, default=0, help="data and model seed")
    demo.add_argument("--out", default=".", help="where demo.png goes (default: here)")
    demo.add_argument("--dir", help="the swarm's dir (default: a temporary one, removed after)")
    demo.add_argument(
        "--http-port",
        type=int,
        metavar="PORT",
        help="node-1 serves the live web view on 127.0.0.1:PORT (docs/web.md)",
    )


def cmd_init(args: argparse.Namespace) -> int:
    data_dir = resolve_data_dir(args.data_dir, os.environ)
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    cfg_path = data_dir / "config.toml"
    key_path = data_dir / "identity.key"
    created = []
    token = decode_token(args.join) if getattr(args, "join", None) else None
    if not key_path.exists():
        create_identity(key_path)
        created.append("identity.key")
    if not cfg_path.exists():
        values: dict[str, Any] = {}
        if args.listen:
            values["listen"] = args.listen
        if args.bootstrap:
            values["bootstrap"] = args.bootstrap
        if getattr(args, "announce", None):
            values["announce"] = args.announce
        if token is not None:
            apply_to_new_config(token, values)
        write_private(cfg_path, render_config_template(values))
        created.append("config.toml")
    load_config(data_dir)  # report a bad existing config now, not at daemon start
    from p2pnode.identity import load_identity_file

    peer_id = peer_id_of(load_identity_file(key_path)).to_base58()
    # An existing config.toml is never rewritten: flags that differ from it were not applied.
    ignored = {}
    announce = getattr(args, "announce", None)
    if "config.toml" not in created and (args.listen or args.bootstrap or announce):
        cfg = load_config(data_dir, env={})  # what the file says, whatever $P2PNODE_* say
        for key, given, current in (
            ("listen", args.listen, cfg.listen),
            ("bootstrap", args.bootstrap, cfg.bootstrap),
            ("announce", announce, cfg.announce),
        ):
            if given and list(given) != list(current):
                ignored[key] = {"given": list(given), "config": list(current)}
    result: dict[str, Any] = {"data_dir": str(data_dir), "peer_id": peer_id, "created": created}
    if ignored:
        result["ignored"] = ignored
    if token is not None:
        result["fingerprint"] = token.fingerprint
    what = ", ".join(created) if created else "nothing (already initialised)"
    human = f"{data_dir}: created {what}\npeer id {peer_id}"
    if token is not None and token.validators and "config.toml" in created:
        human += f"\ncommittee fingerprint {token.fingerprint}"
    _print(args, result, human)
    if token is not None and "config.toml" not in created:
        print(
            f"p2pnode: init: {cfg_path} already exists, so --join was not applied. To apply "
            f"it: p2pnode --data-dir {data_dir} join TOKEN",
            file=sys.stderr,
        )
        return EXIT_ERROR
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
            argparse.Namespace(
                data_dir=str(data_dir), listen=None, bootstrap=None, announce=None, json=False
            )
        )
    overrides = {
        "listen": args.listen,
        "bootstrap": args.bootstrap,
        "announce": args.announce,
        "psk_file": args.psk_file,
        "metrics_port": args.metrics_port,
        "http.port": args.http_port,
        "log_level": args.log_level,
        "log_format": args.log_format,
        "discovery.mdns": True if args.mdns else None,
    }
    cfg = load_config(data_dir, overrides=overrides)
    from p2pnode.daemon import DaemonStartError, run_daemon

    try:
        rc = run_daemon(cfg)
    except DaemonStartError as exc:
        raise CliError(f"daemon failed to start: {exc}") from None
    # Everything is closed and written (the store, the blob rows, the socket): what is left is
    # the interpreter tearing down every module and object, which took 2-11 s on a loaded
    # machine, inside every stop window of systemd, compose and the tests. Skip it.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)


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
    # Older daemons (and the status of other builds) lack these fields.
    if s.get("listen_addrs") and s["listen_addrs"] != [a.rsplit("/p2p/", 1)[0] for a in s["addrs"]]:
        lines.append("listening    " + "\n             ".join(s["listen_addrs"]))
    nat = s.get("nat")
    if nat:
        lines.append("reachability " + _reachability_line(nat))
    committee = s.get("committee")
    if committee:
        lines.append(
            f"committee    {committee['validators']} validators, "
            f"fingerprint {committee['fingerprint']}"
        )
    _print(args, s, "\n".join(lines))
    return 0


def _reachability_line(nat: dict[str, Any]) -> str:
    """``public``, ``relayed via <relay>`` and so on, with what this node relays for others."""
    text = nat["reachability"]
    relays = [r["relay"] for r in nat.get("reservations", [])]
    if relays:
        text += " via " + ", ".join(relays)
    if nat["reachability"] == "unknown" and nat.get("verdicts") == []:
        text += " (no peer has dialled back yet)"
    service = nat.get("relay_service") or {}
    if service.get("serving"):
        text += (
            f"; serving as a relay: {service['reservations']} reservations,"
            f" {service['circuits_active']} circuits, {service['bytes_relayed']} bytes relayed"
        )
    return text


def _connection_text(p: dict[str, Any]) -> str:
    kind = p.get("connection")
    if kind == "relayed":
        return f"relayed via {p['relay']}"
    if kind == "punched":
        return "direct (hole punched)"
    return kind or ""


def cmd_peers(args: argparse.Namespace) -> int:
    with _client(args) as c:
        result = c.peers()
    rows = [
        "  ".join(x for x in (p["peer_id"], _connection_text(p), " ".join(p["addrs"])) if x)
        for p in result["peers"]
    ]
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


def cmd_punch(args: argparse.Namespace) -> int:
    with _client(args) as c:
        r = c.punch(args.peer_id)
    what = "direct connection to" if r["direct"] else "no direct connection to"
    _print(args, r, f"{what} {r['peer_id']} ({_connection_text(r)})")
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
    "punch": cmd_punch,
    "dht": cmd_dht,
    "swarm": cmd_swarm,
    "join-token": cmd_join_token,
    "join": cmd_join,
    "blob": cmd_blob,
    "ptr": cmd_ptr,
    "members": lambda args: members_cli.cmd_members(args, _client),
    "consensus": lambda args: consensus_cli.cmd_consensus(args, _client),
    "log": lambda args: consensus_cli.cmd_log(args, _client),
    "job": cmd_job,
    "model": cmd_model,
    "group": cmd_group,
    "demo": lambda args: _demo(args),
    "doctor": cmd_doctor,
    **TRUST_COMMANDS,
}


def _demo(args: argparse.Namespace) -> int:
    from p2pnode.demo import cmd_demo  # late: it pulls in the swarm launcher

    return cmd_demo(args)


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
    os.umask(PRIVATE_UMASK)  # init, swarm and daemon write data dirs: private, whatever umask
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
