"""Metrics and logs as an operator meets them: a real Prometheus scrapes a 4-daemon swarm that
trains a job, the dashboard's every query returns data, docs/metrics.md lists exactly what is
exported, and the daemons' JSON log lines name their peer, service, job and round.

Prometheus is Debian's ``prometheus`` package (.ci/apt-packages); without its binary the
Prometheus test skips, saying so. It runs on 127.0.0.1 with its own data dir under tmp_path,
and is ended by its pid.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from p2pnode.config.edit import set_config_value
from p2pnode.consensus.genesis import genesis_validators
from p2pnode.swarm import free_ports
from tests.integration.harness import LocalSwarm

pytestmark = [pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "metrics.md"
DASHBOARD = REPO / "deploy" / "grafana" / "p2pnode-dashboard.json"
ROUNDS = 3
_SPEC = f'name = "metrics"\nrounds = {ROUNDS}\n[sync]\ndeadline = 3.0\n'
_ROW = re.compile(r"^\| `(p2pnode_[a-z0-9_]+)` \| (counter|gauge|histogram) \| ([^|]*) \|", re.M)


class Swarm:
    def __init__(self, swarm: LocalSwarm, ports: list[int]) -> None:
        self.swarm = swarm
        self.ports = ports

    def scrape(self, i: int) -> str:
        url = f"http://127.0.0.1:{self.ports[i - 1]}/metrics"
        with urllib.request.urlopen(url, timeout=10) as r:
            return str(r.read().decode())


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swarm]:
    """4 daemons (a committee of 4) with metrics on; each test that needs a job trains one
    under its own eyes (``_train``)."""
    parent = tmp_path_factory.mktemp("metrics")
    swarm = LocalSwarm(parent, 4, {"consensus.validators": genesis_validators(parent, 4)})
    ports = free_ports(4)
    for i, port in enumerate(ports, 1):
        set_config_value(swarm.node(i).data_dir, "metrics_port", [str(port)])
        set_config_value(swarm.node(i).data_dir, "log_format", ["json"])
    set_config_value(swarm.node(2).data_dir, "log_levels", ["rounds=debug"])
    try:
        swarm.start()
        swarm.wait_connected(3)
        yield Swarm(swarm, ports)
    finally:
        swarm.stop()


def _train(s: Swarm, timeout: float = 120) -> dict[str, Any]:
    with s.swarm.client(1, timeout=60) as c:
        job = c.call("job.create", {"spec": _SPEC})["job"]
    deadline = time.monotonic() + timeout
    while True:
        with s.swarm.client(1) as c:
            st: dict[str, Any] = c.call("job.status", {"job": job})
        if st["status"] != "running":
            return st
        assert time.monotonic() < deadline, st
        time.sleep(0.5)


def _exported(text: str) -> dict[str, tuple[str, set[str]]]:
    """name -> (type, label names seen) from the text exposition."""
    types: dict[str, str] = {}
    labels: dict[str, set[str]] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
            labels[name] = set()
        elif line and not line.startswith("#"):
            m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})?", line)
            assert m is not None
            sample, names = m.group(1), set(re.findall(r'(\w+)="', m.group(2) or "")) - {"le"}
            for base in (sample, re.sub(r"_(bucket|count|sum)$", "", sample)):
                if base in labels:
                    labels[base] |= names
                    break
    return {n: (t, labels[n]) for n, t in types.items()}


def _documented() -> dict[str, tuple[str, set[str]]]:
    out = {}
    for name, kind, cell in _ROW.findall(DOC.read_text()):
        assert name not in out, f"{name} is in docs/metrics.md twice"
        out[name] = (kind, set(re.findall(r"`(\w+)`", cell)))
    return out


@pytest.mark.timeout(300)
def test_every_metric_is_documented_and_every_documented_one_exported(trained: Swarm) -> None:
    st = _train(trained)
    assert st["status"] == "completed", st
    exported = _exported(trained.scrape(1))
    documented = _documented()
    assert len(documented) >= 50
    missing = sorted(set(exported) - set(documented))
    assert not missing, "exported but not in docs/metrics.md:\n" + "\n".join(
        f"| `{n}` | {exported[n][0]} | ... |" for n in missing
    )
    stale = sorted(set(documented) - set(exported))
    assert not stale, f"in docs/metrics.md but not exported: {stale}"
    for name, (kind, labels) in exported.items():
        doc_kind, doc_labels = documented[name]
        assert kind == doc_kind, f"{name}: exported as {kind}, documented as {doc_kind}"
        # A labelled metric shows its labels once it has a value; all it shows are documented.
        assert labels <= doc_labels, f"{name}: labels {labels} but documented {doc_labels}"
    text = trained.scrape(2)
    # the trained job shows in every service's figures, here on another validator
    assert re.search(rf"p2pnode_rounds_committed_total {ROUNDS}\.0", text), text
    assert re.search(r'p2pnode_membership_members\{state="alive"\} 4\.0', text)
    assert re.search(r"p2pnode_consensus_committee_size 4\.0", text)
    acc = re.search(r'p2pnode_job_accuracy\{job="[0-9a-f]+"\} ([0-9.]+)', text)
    assert acc is not None and float(acc.group(1)) > 0.5
    assert float(re.findall(r"p2pnode_blob_fetched_bytes_total ([0-9.e+]+)", text)[0]) > 0
    assert float(re.findall(r"p2pnode_trust_reward_units_total ([0-9.e+]+)", text)[0]) > 0


def _query(port: int, expr: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.loads(r.read())
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def _dashboard_queries() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    return [
        (p["title"], t["expr"])
        for p in dash["panels"]
        if p["type"] != "row"
        for t in p.get("targets", [])
    ]


@pytest.mark.timeout(300)
@pytest.mark.skipif(
    shutil.which("prometheus") is None,
    reason="no prometheus binary (Debian: apt-get install prometheus; .ci/run installs it)",
)
def test_prometheus_scrapes_the_swarm_and_every_dashboard_query_returns_data(
    trained: Swarm, tmp_path: Path
) -> None:
    (port,) = free_ports(1)
    targets = [f"127.0.0.1:{p}" for p in trained.ports]
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: p2pnode\n    static_configs:\n"
        f"      - targets: {json.dumps(targets)}\n"
    )
    log = (tmp_path / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:  # every daemon scraped and up
            try:
                up = _query(port, "up")
            except OSError:
                up = []
            if len(up) == 4 and all(r["value"][1] == "1" for r in up):
                break
            assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()[-3000:]
            assert time.monotonic() < deadline, up
            time.sleep(0.5)
        st = _train(trained)  # under Prometheus's eyes: the rates see the rounds
        assert st["status"] == "completed", st
        time.sleep(3)  # a few scrapes after the last round
        names = {r["metric"]["__name__"] for r in _query(port, '{__name__=~"p2pnode_.+"}')}
        scraped = {
            line.split("{")[0].split(" ")[0]
            for line in trained.scrape(1).splitlines()
            if line and not line.startswith("#")
        }
        assert scraped <= names, f"scraped but not stored by Prometheus: {scraped - names}"
        empty = []
        for title, expr in _dashboard_queries():
            values = [r["value"][1] for r in _query(port, expr)]
            if not values or all(math.isnan(float(v)) for v in values):
                empty.append(f"{title}: {expr} -> {values}")
        assert not empty, "dashboard queries without data:\n" + "\n".join(empty)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _json_lines(path: Path) -> list[dict[str, Any]]:
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    out = []
    for line in lines:
        record = json.loads(line)  # every line is one JSON object
        assert isinstance(record, dict), line
        out.append(record)
    return out


@pytest.mark.timeout(300)
def test_json_logs_name_the_peer_the_service_and_the_job_and_round(trained: Swarm) -> None:
    st = _train(trained)
    assert st["status"] == "completed", st
    job = st["job"]
    time.sleep(1)  # the last round's line is written after the status changed
    records = {i: _json_lines(trained.swarm.node(i).data_dir / "daemon.log") for i in (1, 2)}
    with trained.swarm.client(1) as c:
        me = c.call("status")["peer_id"]
    one = records[1]
    assert {r["level"] for r in one} <= {"debug", "info", "warning", "error"}
    ready = [r for r in one if "ready" in r["msg"]]
    assert ready and ready[0]["peer_id"] == me and ready[0]["service"] == "daemon"
    committed = [r for r in one if r["service"] == "rounds" and "committed at" in r["msg"]]
    assert len(committed) >= ROUNDS, [r["msg"] for r in one][-20:]
    assert all(isinstance(r["job"], str) and isinstance(r["round"], int) for r in committed)
    assert {r["round"] for r in committed if r["job"] == job} == set(range(1, ROUNDS + 1))
    # log_levels: node 2 logs the rounds' phases at DEBUG, node 1 (log_level info) does not
    assert not [r for r in one if r["level"] == "debug"]
    phases = [r for r in records[2] if r["level"] == "debug" and r["service"] == "rounds"]
    assert phases and all("job" in r and "round" in r for r in phases)
    assert not [r for r in records[2] if r["level"] == "debug" and r["service"] != "rounds"]
