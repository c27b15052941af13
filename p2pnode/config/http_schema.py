"""The ``http.*`` settings: the live web view on 127.0.0.1 (docs/web.md)."""

from __future__ import annotations

from p2pnode.config.setting import Setting, _range

__all__ = ["HTTP_SCHEMA"]

HTTP_SCHEMA: tuple[Setting, ...] = (
    Setting(
        "http.port",
        int,
        0,
        "Serve the live web view on http://127.0.0.1:<port>/ (0: off). Loopback only: reach it "
        "from another machine through ssh -L (docs/web.md).",
        _range(0, 65535),
    ),
    Setting(
        "http.max_clients",
        int,
        8,
        "Browsers following the live event stream at once; one more is answered 503.",
        _range(1, 256),
    ),
    Setting(
        "http.queue_size",
        int,
        64,
        "Events queued for one browser; a browser that falls this far behind is disconnected "
        "(it reconnects and reloads the snapshot), so a slow one cannot grow the daemon's memory.",
        _range(4, 4096),
    ),
    Setting(
        "http.read_timeout",
        float,
        5.0,
        "Seconds a client may take to send its request head, or to take a write, before it is "
        "disconnected.",
        _range(0.1, 300),
    ),
)
