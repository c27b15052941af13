"""The live web view a daemon serves on 127.0.0.1 when ``http.port`` is set (docs/web.md)."""

from p2pnode.web.server import WebServer

__all__ = ["WebServer"]
