"""The web view's JSON: read from the IPC adapters' methods, in process.

The daemon hands the web server the same method table its IPC socket serves, so a snapshot is
exactly what ``p2pnode members``, ``consensus.log`` or ``job.status`` answers, reshaped for the
page (log entries summarised, bytes as hex). Only the read-only methods in :data:`READS` are
called; they never touch their session argument, so none is made for them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from p2pnode.ipc.errors import IpcError
from p2pnode.ipc.server import Method
from p2pnode_protocols.rounds import CommitRound, decode_result
from p2pnode_protocols.rounds import decode_tx as decode_rounds_tx

READS = (
    "status",
    "members",
    "consensus.status",
    "consensus.log",
    "job.list",
    "job.status",
    "blob.transfers",
)
MAX_LOG = 256  # entries per snapshot (consensus.log's own bound)
MAX_JOBS = 16  # the most recent jobs with their histories
_NO_SESSION: Any = None


class Unavailable(Exception):
    """A section this node cannot give (consensus off: no log, no jobs)."""


class Snapshots:
    def __init__(self, methods: Mapping[str, Method]) -> None:
        missing = [m for m in READS if m not in methods]
        if missing:
            raise ValueError(f"the method table lacks {', '.join(missing)}")
        self._methods = {m: methods[m] for m in READS}

    async def _call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        try:
            return await self._methods[method](params or {}, _NO_SESSION, 0)
        except IpcError as exc:
            raise Unavailable(str(exc)) from None

    async def node(self) -> dict[str, Any]:
        st = await self._call("status")
        return {
            "peer_id": st.get("peer_id"),
            "version": st.get("version"),
            "uptime": st.get("uptime"),
            "connected_peers": st.get("connected_peers"),
            "addrs": st.get("addrs"),
        }

    async def members(self) -> dict[str, Any]:
        got = await self._call("members")
        return {"members": got["members"], "awareness": got["awareness"]}

    async def log(self, limit: int) -> dict[str, Any]:
        """The last ``limit`` committed entries, newest first, each summarised."""
        st = await self._call("consensus.status")
        top = st.get("log_last") or 0
        first = max(1, top - limit + 1)
        entries = []
        if top:
            got = await self._call("consensus.log", {"from": first, "to": top})
            entries = [summarise_entry(e) for e in reversed(got["entries"])]
        return {
            "last": top,
            "view": st.get("view"),
            "primary": st.get("primary"),
            "committee": st.get("committee"),
            "entries": entries,
        }

    async def jobs(self) -> dict[str, Any]:
        listed = (await self._call("job.list"))["jobs"][-MAX_JOBS:]
        out = []
        for row in reversed(listed):
            try:
                st = await self._call("job.status", {"job": row["job"]})
            except Unavailable:
                continue  # gone between the two calls
            out.append(
                {
                    **{k: st[k] for k in row},
                    "history": [
                        {k: h[k] for k in ("round", "accuracy", "loss", "updates", "phases")}
                        for h in st["history"]
                    ],
                    "current": st["current"],
                }
            )
        return {"jobs": out}

    async def transfers(self) -> dict[str, Any]:
        return dict(await self._call("blob.transfers"))

    async def section(self, name: str, **kw: Any) -> dict[str, Any]:
        """One section by name, ``{"error": ...}`` when this node cannot give it."""
        try:
            return await getattr(self, name)(**kw)  # type: ignore[no-any-return]
        except Unavailable as exc:
            return {"error": str(exc)}

    async def all(self, log_limit: int) -> dict[str, Any]:
        return {
            "node": await self.section("node"),
            "members": await self.section("members"),
            "log": await self.section("log", limit=log_limit),
            "jobs": await self.section("jobs"),
            "transfers": await self.section("transfers"),
        }


SECTIONS = ("node", "members", "log", "jobs", "transfers")


def summarise_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """A log entry as the page lists it: seq, digest and one line of text per transaction."""
    return {
        "seq": entry["seq"],
        "digest": entry["digest"],
        "txs": [summarise_tx(t["tx"], t.get("status")) for t in entry["txs"]],
    }


def summarise_tx(tx: dict[str, Any], status: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": tx["type"], "status": status}
    if tx["type"] == "app":
        out["app"] = tx["app"]
        if tx["app"] == "rounds":
            try:
                decoded = decode_rounds_tx(tx["body"])
            except Exception:  # a transaction the ledger refused is still in the log
                out["name"] = "undecodable"
                return out
            out["name"] = type(decoded).__name__
            if isinstance(decoded, CommitRound):
                try:  # the job and round are inside the signed result
                    decoded = decode_result(decoded.result)
                except Exception:
                    return out
            for attr in ("job", "round", "accuracy"):
                value = getattr(decoded, attr, None)
                if isinstance(value, (str, int, float)):
                    out[attr] = value
    elif tx["type"] == "kv_put":
        out["key"] = tx["key"]
    elif tx["type"] == "set_committee":
        out["epoch"] = tx["epoch"]
    return out
