"""deploy/p2pnode.service under a real systemd, in a container, with every hardening option on.

An image adds systemd to the project's image and installs the unit as docs/deploy.md says
(p2pnode at /opt/p2pnode/bin/p2pnode, the user p2pnode); systemd boots as the container's
PID 1 (CAP_SYS_ADMIN: the unit's sandboxing makes mount namespaces). The daemon must start as
p2pnode with no capabilities and no new privileges, in a 0700 state dir of its own, answer its
CLI, list its interface addresses (netlink) when listening on every interface, come back after
SIGKILL (Restart=on-failure), and stop cleanly (exit status 0) on ``systemctl stop``. Skipped,
with the reason, where no Docker engine runs or systemd cannot boot in a container here.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from .engine import REPO, run

pytestmark = pytest.mark.slow

CHECK_IMAGE = "p2pnode-systemd-check:latest"
DOCKERFILE = """FROM {base}
USER root
RUN apt-get update \\
    && apt-get install -y --no-install-recommends systemd systemd-sysv \\
    && rm -rf /var/lib/apt/lists/*
RUN mkdir -p /opt/p2pnode/bin && ln -s "$(command -v p2pnode)" /opt/p2pnode/bin/p2pnode
COPY p2pnode.service /etc/systemd/system/p2pnode.service
RUN systemctl enable p2pnode
ENTRYPOINT []
CMD ["/lib/systemd/systemd"]
"""
#: the container's address on Docker's bridge, as its own resolver gives it.
MY_ADDRESS = "import socket; print(socket.gethostbyname(socket.gethostname()))"
CLI = "runuser -u p2pnode -- /opt/p2pnode/bin/p2pnode --data-dir /var/lib/p2pnode"


def _sh(container: str, script: str, timeout: float = 60) -> str:
    return run(["docker", "exec", container, "sh", "-c", script], timeout=timeout).stdout


def _show(container: str, *props: str) -> dict[str, str]:
    out = _sh(container, "systemctl show " + " ".join(f"-p {p}" for p in props) + " p2pnode")
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def _until_answers(container: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        r = subprocess.run(
            ["docker", "exec", container, "sh", "-c", f"{CLI} status"],
            capture_output=True,
            timeout=60,
            check=False,
        )
        if r.returncode == 0:
            return
        assert time.monotonic() < deadline, f"the daemon did not answer: {r.stderr!r}"
        time.sleep(1)


@pytest.mark.timeout(900)
def test_unit_runs_hardened_restarts_and_stops_cleanly(image: str, tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text(DOCKERFILE.format(base=image))
    (tmp_path / "p2pnode.service").write_bytes((REPO / "deploy" / "p2pnode.service").read_bytes())
    run(["docker", "build", "-q", "-t", CHECK_IMAGE, str(tmp_path)], timeout=900)
    name = f"p2pnodetest{os.getpid()}-systemd"
    run(
        [
            "docker", "run", "-d", "--name", name, "--cap-add", "SYS_ADMIN",
            "--tmpfs", "/run", "--tmpfs", "/run/lock", "-e", "container=docker",
            "-v", "/sys/fs/cgroup:/sys/fs/cgroup:ro", CHECK_IMAGE,
        ],
        timeout=120,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            r = subprocess.run(
                ["docker", "exec", name, "systemctl", "is-system-running"],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            state = r.stdout.strip()
            if state in ("running", "degraded"):
                break
            if time.monotonic() > deadline:
                logs = run(["docker", "logs", name], timeout=30)
                pytest.skip(f"systemd does not boot in a container here ({state!r}): {logs.stderr}")
            time.sleep(1)

        _until_answers(name)
        main = _show(name, "MainPID")["MainPID"]
        proc = _sh(name, f"cat /proc/{main}/status")
        fields = dict(line.split(":", 1) for line in proc.splitlines() if ":" in line)
        assert fields["Uid"].split()[0] == _sh(name, "id -u p2pnode").strip() != "0"
        assert int(fields["CapEff"], 16) == 0 and int(fields["CapBnd"], 16) == 0
        assert fields["NoNewPrivs"].strip() == "1"
        assert _sh(name, "stat -c '%a %U' /var/lib/p2pnode").split() == ["700", "p2pnode"]

        # Every interface's address advertised: netlink works inside the sandbox.
        _sh(name, f"{CLI} config set listen /ip4/0.0.0.0/tcp/4001 && systemctl restart p2pnode")
        _until_answers(name)
        addrs = _sh(name, f"{CLI} --json status")
        ip = _sh(name, f"python3 -c {MY_ADDRESS!r}").strip()
        assert f"/ip4/{ip}/tcp/4001" in addrs

        # SIGKILL: systemd starts it again (Restart=on-failure).
        killed = _show(name, "MainPID")["MainPID"]
        _sh(name, f"kill -9 {killed}")
        deadline = time.monotonic() + 60
        while _show(name, "MainPID")["MainPID"] in ("0", killed):
            assert time.monotonic() < deadline, "not restarted after SIGKILL"
            time.sleep(0.5)
        _until_answers(name)
        assert int(_show(name, "NRestarts")["NRestarts"]) >= 1

        # A clean stop: the daemon's own exit status 0, not death by the signal.
        _sh(name, "systemctl stop p2pnode", timeout=120)
        shown = _show(name, "Result", "ExecMainCode", "ExecMainStatus", "ActiveState")
        assert shown == {
            "Result": "success",
            "ExecMainCode": "1",  # CLD_EXITED
            "ExecMainStatus": "0",
            "ActiveState": "inactive",
        }, shown
    finally:
        subprocess.run(["docker", "rm", "-f", "-v", name], capture_output=True, timeout=120)
