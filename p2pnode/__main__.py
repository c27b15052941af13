"""``python -m p2pnode`` is the ``p2pnode`` command."""

import sys

from p2pnode.cli import main

sys.exit(main())
