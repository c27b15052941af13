"""The learning library: pure, deterministic numpy for federated training.

Modules, bottom up: :mod:`~p2pnode.training.state_dict` (the parameter format),
:mod:`~p2pnode.training.models` and :mod:`~p2pnode.training.torch_adapter` (models),
:mod:`~p2pnode.training.data` and :mod:`~p2pnode.training.sharding` (the shipped digits data and
client splits), :mod:`~p2pnode.training.local` (a trainer's local SGD),
:mod:`~p2pnode.training.compression` (encoded updates, error feedback),
:mod:`~p2pnode.training.aggregation` (robust rules), :mod:`~p2pnode.training.optimizers` and
:mod:`~p2pnode.training.schedules` (the server step), and :mod:`~p2pnode.training.sync` (BSP, SSP
and bounded-delay asynchronous policies). None of them does I/O, reads a clock or uses global
randomness: a seed or a numpy Generator always comes in as an argument.
"""
