"""The client's readers of the service's two streaming formats, fed what the service writes."""

from __future__ import annotations

import pytest

from app.api.events_stream import sse
from app.api.multipart import byte_parts, content_type, new_boundary
from app.client.event_stream import ServerEvent, parse_sse
from app.client.series_cache import CacheError, iter_parts, split_multipart


def test_server_sent_events_are_parsed_as_the_service_writes_them():
    wire = (b": heartbeat\n\n" + sse("hello", {"user": "local"}) + b": heartbeat\n\n"
            + sse("reviewed_changed", {"study_uid": "1.2", "reviewed": True, "row": None})
            + b"event: odd\ndata: {\"a\":\ndata: 1}\n\n"      # data split over two lines
            + b"event: broken\ndata: not json\n\n"
            + b"data: {\"b\": 2}\n\n")                       # no event name: "message"
    events = list(parse_sse(wire.decode().split("\n")))
    assert events == [ServerEvent("hello", {"user": "local"}),
                      ServerEvent("reviewed_changed", {"study_uid": "1.2", "reviewed": True, "row": None}),
                      ServerEvent("odd", {"a": 1}), ServerEvent("message", {"b": 2})]


def test_multipart_related_parts_come_back_byte_for_byte():
    boundary = new_boundary()
    parts = [b"DICM-one\r\n\r\nwith blank lines\r\n", b"", bytes(range(256)) * 40]
    body = b"".join(byte_parts([("application/dicom", p) for p in parts], boundary))
    assert split_multipart(body, content_type("application/dicom", boundary)) == parts
    for size in (1, 7, 4096):   # as it arrives: delimiters and headers split across chunks
        chunks = [body[i:i + size] for i in range(0, len(body), size)]
        assert list(iter_parts(chunks, boundary.encode())) == parts
    with pytest.raises(CacheError):
        split_multipart(body, "application/dicom")
