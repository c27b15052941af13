"""The trio IPC client, :class:`AsyncClient`: one Unix socket, many tasks at once.

Requests are multiplexed: each reply is routed to its caller by id by one reader task, which
lives in the nursery of :meth:`AsyncClient.open`. Open with
``async with AsyncClient.open(data_dir=...) as client:``.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from p2pnode.ipc.api import (
    DEFAULT_TIMEOUT,
    MAX_FRAME,
    MAX_REPLY,
    Api,
    frame_buffers,
    groups,
    not_running,
    result_of,
    socket_path_for,
)
from p2pnode.ipc.client import Client
from p2pnode.ipc.errors import DaemonNotRunning, IpcError, NotFound, error_from_wire
from p2pnode.ipc.groups import AsyncGroup, join_params
from p2pnode.ipc.tasks import (
    JOB_POLL,
    MAX_WAIT,
    REPLY_SLACK,
    AsyncTask,
    JobData,
    decode_params,
    spec_param,
)
from p2pnode_protocols.framing import FrameDecoder, FrameError

if TYPE_CHECKING:
    import numpy as np

__all__ = ["AsyncClient"]


class AsyncClient(Api):
    """Trio client. Open with ``async with AsyncClient.open(...) as client:``."""

    def __init__(
        self, stream: trio.SocketStream, path: Path, timeout: float, max_frame: int = MAX_FRAME
    ) -> None:
        self._stream = stream
        self.path = path
        self.timeout = timeout
        self.max_frame = max_frame
        self._ids = itertools.count(1)
        self._waiting: dict[int, trio.MemorySendChannel[dict[str, Any]]] = {}
        self._send_lock = trio.Lock()
        self._broken: IpcError | None = None

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        *,
        socket_path: str | os.PathLike[str] | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_frame: int = MAX_FRAME,
    ) -> AsyncIterator[AsyncClient]:
        """``max_frame``: the daemon's ``ipc.max_frame``, when not the default."""
        path = socket_path_for(socket_path=socket_path, data_dir=data_dir)
        try:
            stream = await trio.open_unix_socket(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise not_running(path) from None
        except OSError as exc:
            raise DaemonNotRunning(f"cannot reach the daemon at {path}: {exc}") from None
        client = cls(stream, path, timeout, max_frame)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client._read_loop)
                try:
                    yield client
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await client._stream.aclose()

    async def _read_loop(self) -> None:
        decoder = FrameDecoder(MAX_REPLY)
        try:
            while True:
                frame = decoder.next_frame()
                if frame is None:
                    data = await self._stream.receive_some(1 << 16)
                    if not data:
                        if self._waiting or decoder.buffered:
                            raise DaemonNotRunning(
                                f"the daemon at {self.path} closed the connection"
                            )
                        # Closed while idle (idle timeout or eviction): nothing was lost.
                        await self._reconnect()
                        decoder = FrameDecoder(MAX_REPLY)
                        continue
                    decoder.receive_data(data)
                    continue
                rid = frame.get("id")
                channel = self._waiting.get(rid) if isinstance(rid, int) else None
                if channel is not None:
                    # A subscriber that stopped reading loses events, not the client.
                    with suppress(trio.WouldBlock, trio.BrokenResourceError):
                        channel.send_nowait(frame)
                elif rid is None and "error" in frame:
                    self._broken = error_from_wire(
                        frame["error"].get("code"), frame["error"].get("message")
                    )
        except (IpcError, FrameError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._broken = exc if isinstance(exc, IpcError) else DaemonNotRunning(str(exc))
        finally:
            for channel in self._waiting.values():
                channel.close()

    async def _reconnect(self) -> None:
        """A new connection in place of one the daemon closed while idle. Under the send
        lock, so no request goes half on the old stream, half on the new."""
        async with self._send_lock:
            old = self._stream
            try:
                self._stream = await trio.open_unix_socket(str(self.path))
            except OSError as exc:
                raise DaemonNotRunning(f"lost the daemon at {self.path}: {exc}") from None
            finally:
                with trio.CancelScope(shield=True):
                    await old.aclose()

    async def _send(self, frame: dict[str, Any], data: list[memoryview] | None = None) -> None:
        if self._broken is not None:
            raise self._broken
        buffers = frame_buffers(frame, data, self.max_frame)
        async with self._send_lock:
            try:
                for buffer in buffers:
                    await self._stream.send_all(buffer)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise DaemonNotRunning(f"lost the daemon at {self.path}: {exc}") from None

    async def call(
        self, method: str, params: dict[str, Any] | None = None, *, timeout: float | None = None
    ) -> Any:
        return await self._request(method, params or {}, timeout=timeout)

    async def _request(
        self,
        method: str,
        params: dict[str, Any],
        data: list[memoryview] | None = None,
        *,
        timeout: float | None = None,
    ) -> Any:
        """One request; ``data`` (if given) goes out as ``params["data"]`` without a copy."""
        rid = next(self._ids)
        send, receive = trio.open_memory_channel[dict[str, Any]](1)
        self._waiting[rid] = send
        try:
            await self._send({"id": rid, "method": method, "params": params}, data)
            with trio.fail_after(self.timeout if timeout is None else timeout):
                try:
                    frame = await receive.receive()
                except trio.EndOfChannel:
                    raise self._broken or DaemonNotRunning("connection closed") from None
            return result_of(frame)
        except trio.TooSlowError:
            raise IpcError(f"no reply to {method} within {self.timeout:g} s") from None
        finally:
            self._waiting.pop(rid, None)

    async def _call(self, method: str, params: dict[str, Any]) -> Any:
        return await self.call(method, params)

    async def blob_upload(
        self,
        pieces: Iterable[bytes | memoryview],
        *,
        media_type: str = "application/octet-stream",
        meta: dict[str, Any] | None = None,
        pin: bool = True,
    ) -> Any:
        begin = {"media_type": media_type, "meta": meta or {}, "pin": pin}
        upload = (await self.call("blob.upload.begin", begin))["upload"]
        try:
            for group in groups(pieces):
                await self._request("blob.upload.write", {"upload": upload}, group)
        except BaseException:
            with trio.CancelScope(shield=True), suppress(IpcError):
                await self.call("blob.upload.abort", {"upload": upload})
            raise
        return await self.call("blob.upload.commit", {"upload": upload})

    async def put_tensors(self, tensors: Mapping[str, Any]) -> str:
        from p2pnode.blobs import tensors as codec

        result = await self.blob_upload(
            codec.encode_pieces(tensors), media_type=codec.MEDIA_TYPE, meta=codec.metadata(tensors)
        )
        return str(result["key"])

    async def get_tensors(self, key: str) -> dict[str, Any]:
        """Fetch (cancellable, here), then read the now local blob as the blocking client
        does, on a connection of its own in a worker thread: the bytes go from the socket
        straight into the model's buffer (``Client.read_into``), and this loop stays free."""
        await self.blob_fetch(key)

        def read() -> dict[str, Any]:
            with Client(socket_path=self.path, timeout=self.timeout) as c:
                return c.get_tensors(key)

        return await trio.to_thread.run_sync(read)

    @asynccontextmanager
    async def subscribe(self, topic: str) -> AsyncIterator[trio.MemoryReceiveChannel[Any]]:
        """``async with client.subscribe("peers") as events: async for e in events: ...``"""
        rid = next(self._ids)
        send, receive = trio.open_memory_channel[dict[str, Any]](256)
        self._waiting[rid] = send
        out_send, out_receive = trio.open_memory_channel[Any](256)
        try:
            await self._send({"id": rid, "method": "subscribe", "params": {"topic": topic}})
            with trio.fail_after(self.timeout):
                result_of(await receive.receive())

            async def pump() -> None:
                async with out_send:
                    async for frame in receive:
                        if "event" in frame:
                            await out_send.send(frame["event"])

            async with trio.open_nursery() as nursery:
                nursery.start_soon(pump)
                try:
                    yield out_receive
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            self._waiting.pop(rid, None)
            if self._broken is None:
                with trio.move_on_after(self.timeout):
                    await self._send(
                        {
                            "id": next(self._ids),
                            "method": "unsubscribe",
                            "params": {"subscription": rid},
                        }
                    )

    # -- collective groups (docs/collectives.md) -------------------------------------------------

    async def join_group(
        self,
        name: str,
        *,
        size: int | None = None,
        min_size: int | None = None,
        wait: float = 0.0,
        timeout: float = 60.0,
    ) -> AsyncGroup:
        """As :meth:`Client.join_group`."""
        params = join_params(name, size, min_size, wait, timeout)
        info = await self.call("group.join", params, timeout=timeout + REPLY_SLACK)
        return AsyncGroup(self._call_within, info, params)

    async def _call_within(self, method: str, params: dict[str, Any], seconds: float) -> Any:
        return await self.call(method, params, timeout=seconds)

    async def groups(self) -> dict[str, Any]:
        return dict(await self.call("group.status"))

    # -- training jobs (docs/ipc.md) -------------------------------------------------------------

    async def create_job(
        self, spec: str | Path | Mapping[str, Any], *, timeout: float = 30.0
    ) -> str:
        """Commit a job from a spec (TOML text, a ``.toml`` file, or a table); its id."""
        params = {"spec": spec_param(spec), "timeout": timeout}
        result = await self.call("job.create", params, timeout=max(self.timeout, timeout + 15))
        return str(result["job"])

    async def jobs(self) -> list[dict[str, Any]]:
        return list((await self.call("job.list"))["jobs"])

    async def job_status(self, job: str) -> dict[str, Any]:
        return dict(await self.call("job.status", {"job": job}))

    async def cancel_job(self, job: str, reason: str | None = None) -> dict[str, Any]:
        params = {"job": job} if reason is None else {"job": job, "reason": reason}
        return dict(await self.call("job.cancel", params))

    async def get_model(self, job: str, round: int | None = None) -> dict[str, np.ndarray]:
        params: dict[str, Any] = {"job": job}
        if round is not None:
            params["round"] = round
        return decode_params(await self.call("model.get", params))

    async def tasks(
        self, job: str, *, timeout: float = 30.0, idle: float | None = None
    ) -> AsyncIterator[AsyncTask]:
        """As :meth:`Client.tasks`: ``async for task in client.tasks(job): ...``. This
        connection becomes the node's trainer for the job until it closes."""
        data = JobData(await self._job_status_soon(job, timeout))
        job_id = str(data.status["job"])
        wait = min(float(timeout), MAX_WAIT)
        last = trio.current_time()
        while True:
            got = await self.call(
                "task.next", {"job": job_id, "timeout": wait}, timeout=wait + REPLY_SLACK
            )
            if got.get("round") is None:
                if got.get("status") != "running":
                    return
                if idle is not None and trio.current_time() - last >= idle:
                    return
                continue
            yield AsyncTask(
                job=job_id,
                round=int(got["round"]),
                shard=int(got["shard"]),
                base_key=str(got["base_key"]),
                _data=data,
                _call=self.call,
            )
            last = trio.current_time()

    async def _job_status_soon(self, job: str, timeout: float) -> dict[str, Any]:
        """``job_status``, waiting up to ``timeout`` s for a job this node's log lacks yet."""
        deadline = trio.current_time() + timeout
        while True:
            try:
                return await self.job_status(job)
            except NotFound:
                if trio.current_time() >= deadline:
                    raise
            await trio.sleep(JOB_POLL)
