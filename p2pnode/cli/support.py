"""What every part of the ``p2pnode`` command line shares: its error, its output, its client.

Kept apart from :mod:`p2pnode.cli.commands` so the command groups in their own modules
(:mod:`p2pnode.cli.blobs`) use them without importing the whole command line.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from p2pnode.ipc.client import Client

__all__ = ["CliError", "client", "print_result"]


class CliError(Exception):
    """A one-line message for stderr."""

    code = "error"


def print_result(args: argparse.Namespace, result: Any, human: str) -> None:
    if args.json:
        print(json.dumps(result, indent=2, default=json_default))
    else:
        print(human)


def json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return {"hex": value.hex()}
    raise TypeError(type(value).__name__)


def client(args: argparse.Namespace) -> Client:
    return Client(socket_path=args.socket, data_dir=args.data_dir)
