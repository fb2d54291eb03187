"""Where a subscription starts: the subscriber-side view of draft-14 filters."""

from __future__ import annotations

import attrs

from pibridge.moq.draft14.messages import FilterType, Location, Subscribe


@attrs.frozen
class AbsoluteStart:
    """Start at an explicit location; ``{epoch, 0}`` loses nothing of that group."""

    group: int
    object: int = 0


@attrs.frozen
class AbsoluteRange:
    """Start at an explicit location and stop after ``end_group``."""

    group: int
    object: int
    end_group: int


@attrs.frozen
class LargestObject:
    """Start after the largest object the publisher has (relays send this)."""


@attrs.frozen
class NextGroupStart:
    """Start at the beginning of the next group."""


Start = AbsoluteStart | AbsoluteRange | LargestObject | NextGroupStart


def filter_fields(start: Start) -> tuple[FilterType, Location | None, int | None]:
    """The (Filter Type, Start Location, End Group) SUBSCRIBE fields for ``start``."""
    if isinstance(start, AbsoluteStart):
        return FilterType.ABSOLUTE_START, Location(start.group, start.object), None
    if isinstance(start, AbsoluteRange):
        return FilterType.ABSOLUTE_RANGE, Location(start.group, start.object), start.end_group
    if isinstance(start, LargestObject):
        return FilterType.LARGEST_OBJECT, None, None
    return FilterType.NEXT_GROUP_START, None, None


def start_of(message: Subscribe) -> Start:
    """The filter a received SUBSCRIBE asks for."""
    if message.filter_type == FilterType.ABSOLUTE_START:
        assert message.start is not None
        return AbsoluteStart(message.start.group, message.start.object)
    if message.filter_type == FilterType.ABSOLUTE_RANGE:
        assert message.start is not None and message.end_group is not None
        return AbsoluteRange(message.start.group, message.start.object, message.end_group)
    if message.filter_type == FilterType.LARGEST_OBJECT:
        return LargestObject()
    return NextGroupStart()
