"""Sans-I/O protocol state machines and wire codecs.

Nothing here imports trio, opens sockets, reads the clock or draws global randomness: time and
entropy come in as inputs, effects go out as values. ``protocols`` never imports ``p2pnode``.
"""
