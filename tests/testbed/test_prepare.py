"""``p2pnode.swarm.prepare`` with a listen function, as the testbed's swarm uses it (no root)."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2pnode.swarm import SwarmError, prepare

pytestmark = pytest.mark.timeout(30)


def test_each_node_listens_where_the_function_says_and_keeps_it(tmp_path: Path) -> None:
    def addr(i: int, port: int) -> str:
        return f"/ip4/10.77.0.{i}/tcp/4001"

    nodes = prepare(tmp_path, 3, {"log_level": "warning"}, listen=addr)
    assert [n.listen for n in nodes] == [addr(i, 0) for i in (1, 2, 3)]
    assert all(n.addr == f"{n.listen}/p2p/{n.peer_id}" for n in nodes)
    again = prepare(tmp_path, 3, listen=lambda i, port: "/ip4/10.9.9.9/tcp/1")
    # An existing config.toml is kept: a restarted testbed keeps its addresses and identities.
    assert [(n.listen, n.peer_id) for n in again] == [(n.listen, n.peer_id) for n in nodes]


def test_without_a_function_nodes_listen_on_loopback(tmp_path: Path) -> None:
    (node,) = prepare(tmp_path, 1)
    assert node.listen.startswith("/ip4/127.0.0.1/tcp/") and "/tcp/0" not in node.listen


@pytest.mark.parametrize("bad", ["/ip4/10.0.0.1/tcp/0", "/ip4/0.0.0.0/tcp/4001"])
def test_an_address_that_cannot_be_dialled_first_is_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(SwarmError, match="fixed"):
        prepare(tmp_path, 1, listen=lambda i, port: bad)
