"""deploy/docker-compose.yml in a real Docker engine: the image, a swarm, a job, a restart.

The project's Dockerfile is built unchanged (on the stand-in base where Docker Hub is out of
reach), then the compose file runs a bootstrap node, a committee of 4 and 2 trainers under a
project name of this test's own: the one-shot init makes the keys and the genesis, the
containers form one swarm on the private-network key, a short job on the shipped digits
reaches its last committed round, restarted and recreated containers come back with the same
peer id and data, no daemon runs as root, and ``docker-compose stop`` stops every daemon
cleanly (exit code 0). ``down -v`` then removes the containers, network and volumes the test
made. Skipped, with the reason, only where no Docker engine runs or can be started.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from .engine import REPO, run

pytestmark = pytest.mark.slow

COMPOSE_FILE = REPO / "deploy" / "docker-compose.yml"
TRAINERS = 2
NODES = 5 + TRAINERS  # the bootstrap node, 4 validators, the trainers
UID = 10001  # the Dockerfile's p2pnode user
JOB = """name = "compose"
rounds = 2
[local]
epochs = 1
[participants]
max = 6
[sync]
deadline = 30
"""


class Compose:
    """``docker-compose`` on the deploy file under one project name (its containers, network
    and volumes are named after it), with the test's image and no ``.env`` of the checkout."""

    def __init__(self, project: str, image: str, env_file: Path) -> None:
        self.project = project
        env_file.write_text("")  # not deploy/.env: an operator's SWARM_KEY stays out of it
        self.env_file = env_file
        self.env = {k: v for k, v in os.environ.items() if k != "SWARM_KEY"}
        self.env["P2PNODE_IMAGE"] = image

    def __call__(
        self, *args: str, timeout: float = 120, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        argv = ["docker-compose", "-f", str(COMPOSE_FILE), "-p", self.project]
        argv += ["--env-file", str(self.env_file), *args]
        return run(argv, timeout=timeout, input=input, env=self.env)

    def container(self, service: str, index: int = 1) -> str:
        """The id of a service's running container (found by compose's labels)."""
        labels = {
            "project": self.project,
            "service": service,
            "container-number": str(index),
        }
        argv = ["docker", "ps", "-q"]
        for k, v in labels.items():
            argv += ["--filter", f"label=com.docker.compose.{k}={v}"]
        ids = run(argv, timeout=30).stdout.split()
        assert len(ids) == 1, (service, index, ids)
        return ids[0]

    def p2pnode(self, service: str, *args: str, index: int = 1, input: str | None = None) -> Any:
        """``p2pnode --json ARGS`` in a service's container, its answer decoded. (``docker
        exec``, not ``docker-compose exec``: the same, without a second of compose's start-up.)"""
        argv = ["docker", "exec", "-i", self.container(service, index), "p2pnode", "--json"]
        return json.loads(run([*argv, *args], timeout=120, input=input).stdout)

    def down(self) -> None:
        """Remove the project's containers, network and volumes, and then any anonymous
        volume of its containers that ``down -v`` left behind (by the names Docker gave them)."""
        ids = self("ps", "-a", "-q").stdout.split()
        volumes: list[str] = []
        if ids:
            fmt = '{{range .Mounts}}{{if eq .Type "volume"}}{{.Name}} {{end}}{{end}}'
            volumes = run(["docker", "inspect", "-f", fmt, *ids], timeout=30).stdout.split()
        self("down", "-v", "--remove-orphans", "-t", "10", timeout=180)
        left = run(["docker", "volume", "ls", "-q"], timeout=30).stdout.split()
        stale = sorted(set(volumes) & set(left))
        if stale:
            run(["docker", "volume", "rm", *stale], timeout=60)

    def containers(self) -> dict[str, str]:
        """Container name -> id of every container of the project, stopped ones too."""
        ids = self("ps", "-a", "-q").stdout.split()
        names = run(["docker", "inspect", "-f", "{{.Name}}", *ids], timeout=30).stdout.split()
        return {n.lstrip("/"): i for n, i in zip(names, ids, strict=True)}


def _until(what: str, check: Any, timeout: float, every: float = 1.0) -> Any:
    """Call ``check`` until it returns something truthy; fail naming ``what`` after timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except AssertionError as exc:  # a command failed: not up yet
            last = exc
        else:
            if last:
                return last
        time.sleep(every)
    raise AssertionError(f"{what} within {timeout} s; last: {last}")


@pytest.mark.timeout(1500)
def test_compose_swarm_runs_a_job_and_restarts_as_itself(image: str, tmp_path: Path) -> None:
    if shutil.which("docker-compose") is None:
        pytest.skip("no docker-compose command (apt-get install docker-compose)")
    compose = Compose(f"p2pnodetest{os.getpid()}", image, tmp_path / "compose.env")
    try:
        compose("up", "-d", "--scale", f"trainer={TRAINERS}", timeout=300)
        genesis = run(
            ["docker", "exec", compose.container("bootstrap"), "cat", "/genesis/genesis.env"],
            timeout=30,
        ).stdout
        validators = genesis.split("VALIDATORS='")[1].split("'")[0].split()
        assert len(validators) == 4

        # One swarm: every node alive in validator-1's view, over the private-network key.
        def all_alive() -> bool:
            members = compose.p2pnode("validator-1", "members")["members"]
            return sum(m["state"] == "alive" for m in members) == NODES

        _until(f"{NODES} members alive", all_alive, timeout=120)
        s = compose.p2pnode("trainer", "status", index=2)
        assert s["private_network"] is True
        # The committee of the genesis, the same on a validator and a trainer.
        v = compose.p2pnode("validator-3", "consensus", "status")
        t = compose.p2pnode("trainer", "consensus", "status")
        assert v["role"] == "validator" and t["role"] == "follower"
        assert v["committee"] == t["committee"] == validators

        # A short job on the shipped digits, submitted on a trainer, to its last round.
        job = compose.p2pnode("trainer", "job", "create", "-", input=JOB)["job"]

        def done() -> dict[str, Any] | None:
            st = compose.p2pnode("bootstrap", "job", "status", job)
            return st if st["status"] == "completed" else None

        st = _until("the job completed", done, timeout=240, every=2.0)
        assert st["rounds_done"] == 2 and [h["round"] for h in st["history"]] == [1, 2]
        assert all(h["updates"] >= 1 for h in st["history"])

        # No daemon runs as root.
        containers = compose.containers()
        for name, cid in containers.items():
            if "_init_" in name:
                continue
            r = run(["docker", "top", cid, "-o", "pid,uid,comm"], timeout=30).stdout
            uids = {int(line.split()[1]) for line in r.splitlines()[1:] if line.strip()}
            assert uids == {UID}, (name, r)

        # Restarted (and, for a validator, recreated) containers keep their peer id and data.
        before = {
            "validator-3": compose.p2pnode("validator-3", "status")["peer_id"],
            "trainer": compose.p2pnode("trainer", "status")["peer_id"],
        }
        compose("restart", "validator-3", "trainer", timeout=120)
        for service, peer_id in before.items():
            after = _until(
                f"{service} answers after its restart",
                lambda s=service: compose.p2pnode(s, "status"),
                timeout=60,
            )
            assert after["peer_id"] == peer_id
            jobs = compose.p2pnode(service, "job", "list")["jobs"]
            assert [j["job"] for j in jobs] == [job]
        compose("up", "-d", "--no-deps", "--force-recreate", "validator-3", timeout=120)
        again = _until(
            "validator-3 answers once recreated",
            lambda: compose.p2pnode("validator-3", "status"),
            timeout=60,
        )
        assert again["peer_id"] == before["validator-3"]

        # Every daemon stops cleanly on SIGTERM.
        compose("stop", "-t", "30", timeout=180)
        codes = run(
            [
                "docker",
                "inspect",
                "-f",
                "{{.Name}} {{.State.ExitCode}}",
                *compose.containers().values(),
            ],
            timeout=30,
        ).stdout
        assert all(line.endswith(" 0") for line in codes.splitlines()), codes
    finally:
        compose.down()
