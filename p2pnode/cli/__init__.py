"""The ``p2pnode`` command line, people's door to a daemon: it speaks only IPC.

``commands`` holds the parser and the commands, ``blobs`` the blob and pointer commands,
``groups`` the collective groups' status, ``support`` what they share (the error, the output,
the client). The membership and consensus commands live beside their services
(``p2pnode.membership.cli``, ``p2pnode.consensus.cli``) and are handed a client, so no service
package imports the IPC layer.
"""

from p2pnode.cli.commands import _parser, main

__all__ = ["_parser", "main"]
