"""``p2pnode daemon``: run a Node under trio until SIGINT or SIGTERM.

Start-up: the data dir's lock (:mod:`p2pnode.datadir`) is taken before the node opens anything
in it, so a second daemon on a live data dir fails at once, naming the running one's pid. The
daemon runs under a 077 umask and, once it holds the lock, tightens the modes of what is
already there (files 0600, directories 0700), so nothing it keeps is readable by others.

Shutdown: the first signal cancels the node's nursery; cleanup (IPC socket removed, streams
closed, SQLite closed) is bounded by ``shutdown_timeout``. If cleanup overruns, a watchdog
thread ends the process so that a supervisor's stop never hangs.
"""

from __future__ import annotations

import logging
import os
import signal
import threading

import trio

from p2pnode.blobs.errors import is_no_space, no_space
from p2pnode.config import Config, ConfigError
from p2pnode.datadir import PRIVATE_UMASK, DataDirError, lock_data_dir, secure_data_dir
from p2pnode.identity import IdentityError
from p2pnode.logs import configure, parse_levels, set_peer_id
from p2pnode.node import Node
from p2pnode.store import StoreError
from p2pnode.taskdump import dump_on_signal

log = logging.getLogger(__name__)


def _watchdog(seconds: float) -> None:
    timer = threading.Timer(seconds, os._exit, args=(1,))
    timer.daemon = True
    timer.start()


async def _main(cfg: Config) -> None:
    node = Node(cfg)
    set_peer_id(node.peer_id)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)

            async def stop_on_signal() -> None:
                async for signum in signals:
                    log.info("received %s; shutting down", signal.Signals(signum).name)
                    _watchdog(cfg.shutdown_timeout)
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(stop_on_signal)
            nursery.start_soon(dump_on_signal)


class DaemonStartError(Exception):
    """The daemon could not start (port in use, socket busy, bad key): one line for people."""


def run_daemon(cfg: Config) -> int:
    configure(cfg.log_level, fmt=cfg.log_format, levels=parse_levels(cfg.log_levels))
    os.umask(PRIVATE_UMASK)  # SQLite, its WAL, chunk files: born 0600 whoever started us
    try:
        # Outside trio and before the Node exists: nothing in the dir is opened without it.
        with lock_data_dir(cfg.data_dir):
            tightened = secure_data_dir(cfg.data_dir)
            if tightened:
                log.info("made %d paths in %s private (0600/0700)", tightened, cfg.data_dir)
            trio.run(_main, cfg)
    except BaseExceptionGroup as group:
        # Start-up failures surface wrapped by nurseries; report the first plain one.
        leaves = _leaves(group)
        for exc in leaves:
            if isinstance(exc, OSError | StoreError | IdentityError | ConfigError):
                raise DaemonStartError(_start_message(cfg, exc)) from group
        raise
    except (OSError, StoreError, IdentityError, ConfigError, DataDirError) as exc:
        raise DaemonStartError(_start_message(cfg, exc)) from exc
    log.info("stopped")
    return 0


def _start_message(cfg: Config, exc: BaseException) -> str:
    """One line for people; a full disk (errno 28 says nothing of where) names the data dir and
    its free space, as the blob API's ``no_space`` does."""
    full = is_no_space(exc) or (isinstance(exc, StoreError) and "disk is full" in str(exc))
    if not full:
        return str(exc)
    return f"{no_space(cfg.data_dir, 'start').args[0]} ({exc})"


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out
