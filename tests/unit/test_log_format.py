"""Log lines: the service of a logger, per-service levels, the human and JSON formats."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from p2pnode import logs


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    out = io.StringIO()
    yield out
    root.handlers[:], _ = saved
    root.setLevel(saved[1])
    for prefixes in logs.SERVICES.values():
        for prefix in prefixes:
            logging.getLogger(prefix).setLevel(logging.NOTSET)
    logs.set_peer_id(None)  # type: ignore[arg-type]


def _configure(out: io.StringIO, **kwargs: object) -> None:
    logs.configure("info", **kwargs)  # type: ignore[arg-type]
    logging.getLogger().handlers[0].setStream(out)  # type: ignore[attr-defined]


@pytest.mark.timeout(10)
def test_service_of_maps_loggers_to_services_most_specific_first() -> None:
    assert logs.service_of("p2pnode.network.dht.service") == "dht"
    assert logs.service_of("p2pnode.network.nat.relay") == "nat"
    assert logs.service_of("p2pnode.network.peers") == "network"
    assert logs.service_of("p2pnode.rounds.work") == "rounds"
    assert logs.service_of("p2pnode.node") == "daemon"
    assert logs.service_of("libp2p.kad_dht") == "libp2p"
    assert logs.service_of("trio") == "trio"


@pytest.mark.timeout(10)
def test_parse_levels_accepts_pairs_and_names_a_bad_part() -> None:
    assert logs.parse_levels("rounds=debug, dht=WARNING") == {"rounds": "debug", "dht": "warning"}
    assert logs.parse_levels("") == {}
    with pytest.raises(ValueError, match="'bogus=debug': expected SERVICE=LEVEL"):
        logs.parse_levels("bogus=debug")
    with pytest.raises(ValueError, match="the level must be one of"):
        logs.parse_levels("dht=loud")
    with pytest.raises(ValueError, match="expected SERVICE=LEVEL"):
        logs.parse_levels("dht")


@pytest.mark.timeout(10)
def test_json_lines_carry_peer_service_job_and_round(captured: io.StringIO) -> None:
    _configure(captured, fmt="json")
    logs.set_peer_id("12D3KooWabcdefXYZ123")
    logging.getLogger("p2pnode.rounds.service").info(
        "round %d committed", 3, extra={"job": "j1", "round": 3}
    )
    logging.getLogger("p2pnode.network.dht.service").warning("plain")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("p2pnode.blobs.service").exception("failed")
    lines = [json.loads(line) for line in captured.getvalue().splitlines()]
    assert len(lines) == 3
    first, second, third = lines
    assert first["msg"] == "round 3 committed" and first["level"] == "info"
    assert first["service"] == "rounds" and first["logger"] == "p2pnode.rounds.service"
    assert first["peer_id"] == "12D3KooWabcdefXYZ123"
    assert (first["job"], first["round"]) == ("j1", 3)
    assert first["ts"].endswith("+00:00")
    assert second["service"] == "dht" and "job" not in second and "round" not in second
    assert third["service"] == "blobs" and "RuntimeError: boom" in third["exc"]


@pytest.mark.timeout(10)
def test_human_lines_are_one_per_event_with_a_short_peer(captured: io.StringIO) -> None:
    _configure(captured)
    logs.set_peer_id("12D3KooWabcdefXYZ123")
    logging.getLogger("p2pnode.rounds.work").warning(
        "training failed", extra={"job": "j1", "round": 2}
    )
    logging.getLogger("p2pnode.consensus.service").info("two\nlines")
    text = captured.getvalue()
    assert " WARNING rounds@…XYZ123: training failed (job j1 round 2)\n" in text
    assert " INFO consensus@…XYZ123: two\n    lines\n" in text
    assert sum(1 for line in text.splitlines() if not line.startswith(" ")) == 2


@pytest.mark.timeout(10)
def test_levels_per_service_override_the_base_level(captured: io.StringIO) -> None:
    _configure(captured, fmt="json", levels={"rounds": "debug", "dht": "error"})
    logging.getLogger("p2pnode.rounds.work").debug("shown")
    logging.getLogger("p2pnode.blobs.service").debug("hidden: blobs stays at info")
    logging.getLogger("p2pnode.network.dht.service").warning("hidden: dht is at error")
    logging.getLogger("p2pnode.network.dht.service").error("shown too")
    logging.getLogger("p2pnode.node").debug("hidden: the daemon is at info")
    msgs = [json.loads(line)["msg"] for line in captured.getvalue().splitlines()]
    assert msgs == ["shown", "shown too"]


@pytest.mark.timeout(10)
def test_a_daemon_level_does_not_leak_into_the_services(captured: io.StringIO) -> None:
    _configure(captured, fmt="json", levels={"daemon": "debug"})
    logging.getLogger("p2pnode.node").debug("shown")
    logging.getLogger("p2pnode.rounds.work").debug("hidden")
    msgs = [json.loads(line)["msg"] for line in captured.getvalue().splitlines()]
    assert msgs == ["shown"]


@pytest.mark.timeout(10)
def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="human, json"):
        logs.configure("info", fmt="xml")
