"""``p2pnode blob ...`` and ``p2pnode ptr ...``: blobs and pointers from the command line.

``blob get KEY -o FILE`` is one IPC call (the daemon fetches and writes the file); while it
runs, a second connection polls the blob's progress for a bar (rich) on a terminal, and says
"looking for providers" until one answers. ``ptr get --owner`` takes a peer id, a node's name
in this node's swarm dir or a data dir.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from p2pnode.cli.support import CliError, client, print_result
from p2pnode.config import resolve_data_dir
from p2pnode.ipc.client import Client
from p2pnode.ipc.errors import IpcError

__all__ = ["add_parsers", "cmd_blob", "cmd_ptr"]


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """``blob ...`` and ``ptr ...``."""
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
    bar: _Bar | None = None
    try:
        with client(args) as poll:
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
                    if bar is None:
                        if drew:
                            print(file=sys.stderr)
                        drew = False
                        bar = _Bar(s["size"])
                    bar.update(s["local_chunks"] / max(1, s["chunks"]))
    finally:
        if bar is not None:
            bar.close()
    if drew:
        print(file=sys.stderr)
    if failure:
        raise failure[0]
    return result


class _Bar:
    """A transfer's progress bar on stderr (rich), for terminals only."""

    def __init__(self, size: int) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

        self._progress = Progress(
            BarColumn(),
            TaskProgressColumn(),
            TextColumn(f"of {_human_size(size)}"),
            console=Console(stderr=True),
        )
        self._task = self._progress.add_task("fetch", total=1.0)
        self._progress.start()

    def update(self, done: float) -> None:
        self._progress.update(self._task, completed=done)

    def close(self) -> None:
        self._progress.stop()


def cmd_blob(args: argparse.Namespace) -> int:
    if args.blob_command == "put":
        path = Path(args.file)
        if args.file != "-" and not path.is_file():
            # Checked before connecting: the answer does not depend on the daemon.
            if path.is_dir():
                raise CliError(f"{args.file} is a directory: blob put stores one file")
            raise CliError(f"{args.file}: no such file")
        with client(args) as c:
            if args.file == "-":
                stdin = iter(lambda: sys.stdin.buffer.read(1 << 20), b"")
                r = c.blob_upload(stdin, media_type=args.media_type, pin=not args.no_pin)
            else:
                r = c.blob_put(path=path, media_type=args.media_type, pin=not args.no_pin)
        print_result(args, r, r["key"])
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
            print_result(args, r, f"wrote {_human_size(r['size'])} to {args.output}")
            return 0
        stat = _fetch_with_progress(
            args, args.key, lambda c: c.blob_fetch(args.key, timeout=args.timeout)
        )
        with client(args) as c:
            offset = 0
            while offset < stat["size"]:
                data = c.blob_read(args.key, offset, 4 << 20)["data"]
                sys.stdout.buffer.write(data)
                offset += len(data)
            sys.stdout.flush()
        return 0
    with client(args) as c:
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
    print_result(args, r, human)
    return 0


def _owner_peer_id(args: argparse.Namespace) -> str | None:
    """``--owner`` as a peer id: given as one, or read from a node's identity.key, the node
    named like a sibling of this data dir (``node-3`` in a ``p2pnode swarm`` dir) or by path."""
    owner = args.owner
    if owner is None:
        return None
    from libp2p.peer.id import ID

    from p2pnode.identity import load_identity_file, peer_id_of

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
    with client(args) as c:
        if args.ptr_command == "set":
            r = c.ptr_set(args.name, args.key, seq=args.seq)
            print_result(args, r, f"{r['pointer']} -> {r['key']} (seq {r['seq']})")
        else:
            r = c.ptr_get(args.name, owner=_owner_peer_id(args))
            print_result(args, r, r["key"])
    return 0
