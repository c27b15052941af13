"""What a collective operation raises."""

from __future__ import annotations


class CollectiveError(Exception):
    """The operation failed on this member; no part of a result is returned."""


class GroupChanged(CollectiveError):
    """The group's membership changed (a member died, left or joined): refresh and retry."""
