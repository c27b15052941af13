"""The web view in a real headless Chromium (the ``chromium`` Debian package; .ci/apt-packages),
driven over the DevTools protocol: the page loads, lists the members of a running 4-daemon
swarm, and a committed round of a short job appears on it without a reload."""

from __future__ import annotations

import pytest

from .cdp import Chromium, find_chromium
from .conftest import LiveSwarm

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

CHROMIUM = find_chromium()


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary on PATH (apt install chromium)")
def test_the_page_shows_the_swarm_and_a_committed_round_arrives_live(live: LiveSwarm) -> None:
    assert CHROMIUM is not None
    live.wait_members(4)
    with Chromium(CHROMIUM) as browser:
        browser.open(live.url)
        browser.wait_for("document.body?.dataset.loaded === '1'", 30)
        # Every member of the swarm, alive, with this node marked.
        rows = browser.wait_for(
            """(() => {
                const rows = [...document.querySelectorAll('#members tbody tr[data-state=alive]')];
                return rows.length === 4 ? rows.map((r) => r.dataset.peer) : null;
            })()""",
            30,
        )
        assert set(rows) == {n.peer_id for n in live.swarm.nodes}
        assert browser.evaluate("document.querySelector('#members tr.self').dataset.peer") == (
            live.swarm.node(1).peer_id
        )
        browser.wait_for("document.getElementById('live').textContent === 'live'", 10)
        # A mark that a reload would wipe out.
        browser.evaluate("window.__noReload = performance.timeOrigin")
        origin = browser.evaluate("window.__noReload")

        job = live.create_job(rounds=2)
        sel = f"document.querySelector('.job[data-job=\"{job}\"]')"
        browser.wait_for(f"{sel} !== null", 60)
        done = browser.wait_for(
            f"Number({sel}.dataset.roundsDone) >= 1 && {sel}.dataset.roundsDone", 90
        )
        assert int(done) >= 1
        # The accuracy curve has a point per committed round, and the log lists the commit.
        points = browser.evaluate(
            f"Number({sel}.querySelector('svg[data-series=accuracy]').dataset.points)"
        )
        assert points >= 1
        browser.wait_for(
            f"[...document.querySelectorAll('#log li')].some((li) => "
            f"li.textContent.includes('CommitRound {job[:8]}'))",
            30,
        )
        assert browser.evaluate("window.__noReload") == origin  # the same page all along
        assert browser.evaluate("document.getElementById('live').textContent") == "live"
