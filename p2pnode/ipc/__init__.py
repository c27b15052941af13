"""The daemon's local door: a Unix socket speaking length-prefixed CBOR frames.

``server`` serves it, ``client`` speaks it, ``params`` checks requests and each other module
adapts one service's methods to it (docs/ipc.md). Services never import this package.
"""
