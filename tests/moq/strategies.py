"""Hypothesis strategies for every draft-14 message and object type."""

from __future__ import annotations

from hypothesis import strategies as st

from pibridge.moq.draft14.messages import (
    MAX_GOAWAY_URI_LENGTH,
    ClientSetup,
    ControlMessage,
    Fetch,
    FetchError,
    FilterType,
    GoAway,
    GroupOrder,
    KeyValuePair,
    Location,
    MaxRequestId,
    Namespace,
    ObjectStatus,
    Parameters,
    Publish,
    PublishDone,
    PublishError,
    PublishNamespace,
    PublishNamespaceCancel,
    PublishNamespaceDone,
    PublishNamespaceError,
    PublishNamespaceOk,
    RequestsBlocked,
    ServerSetup,
    SubgroupHeader,
    SubgroupIdMode,
    SubgroupObject,
    Subscribe,
    SubscribeError,
    SubscribeNamespace,
    SubscribeNamespaceError,
    SubscribeNamespaceOk,
    SubscribeOk,
    SubscribeUpdate,
    TrackStatus,
    TrackStatusError,
    Unsubscribe,
    UnsubscribeNamespace,
)
from pibridge.moq.wire import MAX_VARINT

varints = st.one_of(
    st.integers(0, 0x3F),
    st.integers(0, 0x3FFF),
    st.integers(0, 0x3FFF_FFFF),
    st.integers(0, MAX_VARINT),
)
uint8s = st.integers(0, 0xFF)
versions = st.integers(0, 0xFFFF_FFFF)
reasons = st.text(max_size=40).filter(lambda text: len(text.encode("utf-8")) <= 1024)

key_value_pairs = st.one_of(
    st.builds(KeyValuePair, varints.map(lambda v: v & ~1), varints),
    st.builds(
        KeyValuePair, varints.map(lambda v: v | 1 if v < MAX_VARINT else v), st.binary(max_size=64)
    ),
)
parameters: st.SearchStrategy[Parameters] = st.lists(key_value_pairs, max_size=4).map(tuple)

namespaces: st.SearchStrategy[Namespace] = st.lists(
    st.binary(max_size=24), min_size=1, max_size=32
).map(tuple)
track_names = st.binary(max_size=64)
locations = st.builds(Location, varints, varints)


@st.composite
def subscribes(draw: st.DrawFn) -> Subscribe:
    filter_type = draw(st.sampled_from(FilterType))
    start = end = None
    if filter_type in (FilterType.ABSOLUTE_START, FilterType.ABSOLUTE_RANGE):
        start = draw(locations)
    if filter_type == FilterType.ABSOLUTE_RANGE:
        assert start is not None
        end = draw(st.integers(start.group, MAX_VARINT))
    return Subscribe(
        request_id=draw(varints),
        namespace=draw(namespaces),
        track_name=draw(track_names),
        filter_type=filter_type,
        start=start,
        end_group=end,
        subscriber_priority=draw(uint8s),
        group_order=draw(st.sampled_from(GroupOrder)),
        forward=draw(st.booleans()),
        parameters=draw(parameters),
    )


control_messages: st.SearchStrategy[ControlMessage] = st.one_of(
    st.builds(ClientSetup, st.lists(versions, min_size=1, max_size=4).map(tuple), parameters),
    st.builds(ServerSetup, versions, parameters),
    st.builds(GoAway, st.binary(max_size=MAX_GOAWAY_URI_LENGTH).filter(lambda b: len(b) < 200)),
    st.builds(MaxRequestId, varints),
    st.builds(RequestsBlocked, varints),
    subscribes(),
    st.builds(
        SubscribeOk,
        varints,
        varints,
        varints,
        st.sampled_from([GroupOrder.ASCENDING, GroupOrder.DESCENDING]),
        st.none() | locations,
        parameters,
    ),
    st.builds(SubscribeError, varints, varints, reasons),
    st.builds(Unsubscribe, varints),
    st.builds(PublishDone, varints, varints, varints, reasons),
    st.builds(PublishNamespace, varints, namespaces, parameters),
    st.builds(PublishNamespaceOk, varints),
    st.builds(PublishNamespaceError, varints, varints, reasons),
    st.builds(PublishNamespaceDone, namespaces),
    st.builds(PublishNamespaceCancel, namespaces, varints, reasons),
    st.builds(SubscribeNamespace, varints, namespaces | st.just(()), parameters),
    st.builds(SubscribeNamespaceOk, varints),
    st.builds(SubscribeNamespaceError, varints, varints, reasons),
    st.builds(UnsubscribeNamespace, namespaces | st.just(())),
    st.builds(SubscribeUpdate, varints, st.binary(max_size=40)),
    st.builds(TrackStatus, varints, st.binary(max_size=40)),
    st.builds(Fetch, varints, st.binary(max_size=40)),
    st.builds(Publish, varints, st.binary(max_size=40)),
    st.builds(TrackStatusError, varints, varints, reasons),
    st.builds(FetchError, varints, varints, reasons),
    st.builds(PublishError, varints, varints, reasons),
)


@st.composite
def subgroup_headers(draw: st.DrawFn) -> SubgroupHeader:
    mode = draw(st.sampled_from(SubgroupIdMode))
    subgroup: int | None = {
        SubgroupIdMode.ZERO: 0,
        SubgroupIdMode.FIRST_OBJECT_ID: None,
        SubgroupIdMode.EXPLICIT: draw(varints),
    }[mode]
    return SubgroupHeader(
        track_alias=draw(varints),
        group_id=draw(varints),
        subgroup_id=subgroup,
        publisher_priority=draw(uint8s),
        subgroup_id_mode=mode,
        extensions_present=draw(st.booleans()),
        end_of_group=draw(st.booleans()),
    )


@st.composite
def subgroup_streams(draw: st.DrawFn) -> tuple[SubgroupHeader, list[SubgroupObject]]:
    """A header and objects with increasing ids, as a publisher would send them."""
    header = draw(subgroup_headers())
    count = draw(st.integers(0, 6))
    object_id = draw(st.integers(0, 1000))
    objects = []
    for _ in range(count):
        status = draw(st.sampled_from(ObjectStatus))
        payload = draw(st.binary(min_size=1, max_size=64)) if status == ObjectStatus.NORMAL else b""
        if status == ObjectStatus.NORMAL and draw(st.booleans()):
            payload = b""
        extensions: Parameters = ()
        if header.extensions_present and status != ObjectStatus.DOES_NOT_EXIST:
            extensions = draw(parameters)
        objects.append(SubgroupObject(object_id, payload, status, extensions))
        object_id += 1 + draw(st.integers(0, 3))
    return header, objects
