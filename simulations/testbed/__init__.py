"""A multi-host testbed on one Linux machine: namespaces, a user-space shaping switch, NATs.

See docs/testbed.md. The public names: :class:`Testbed`, :class:`Host`, :class:`Router`,
:class:`LinkSpec`, :func:`testbed_unavailable`; daemons on a testbed are
:class:`p2pnode_simulations.testbed.swarm.TestbedSwarm` (not imported here: the switch
process imports this package and needs none of the daemon).
"""

from p2pnode_simulations.testbed.links import LinkSpec, LinkSpecError
from p2pnode_simulations.testbed.testbed import (
    Host,
    Router,
    Testbed,
    TestbedError,
    testbed_unavailable,
)

__all__ = [
    "Host",
    "LinkSpec",
    "LinkSpecError",
    "Router",
    "Testbed",
    "TestbedError",
    "testbed_unavailable",
]
