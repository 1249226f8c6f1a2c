"""The stub's event-stream encoder, checked against botocore's own decoder and Bedrock's service model."""

from __future__ import annotations

import base64
import json
import struct
import zlib
from collections.abc import Iterator

import botocore.session
import pytest
from botocore.eventstream import ChecksumMismatch, EventStream, EventStreamBuffer, EventStreamMessage
from botocore.exceptions import EventStreamError
from botocore.parsers import EventStreamJSONParser

from tests.stack.bedrock_stub import eventstream


def decode(data: bytes, piece: int | None = None) -> list[EventStreamMessage]:
    buffer = EventStreamBuffer()
    step = piece or len(data)
    for start in range(0, len(data), step):
        buffer.add_data(data[start : start + step])
    return list(buffer)


class _RawStream:
    """Stands in for urllib3's response body: hands botocore the bytes in small pieces, like a socket."""

    def __init__(self, data: bytes, piece: int = 7) -> None:
        self._data, self._piece = data, piece

    def stream(self) -> Iterator[bytes]:
        for start in range(0, len(self._data), self._piece):
            yield self._data[start : start + self._piece]

    def close(self) -> None:
        pass


def bedrock_stream(operation: str, data: bytes) -> EventStream:
    model = botocore.session.get_session().get_service_model("bedrock-runtime")
    output = model.operation_model(operation).output_shape
    member = "stream" if operation == "ConverseStream" else "body"
    return EventStream(_RawStream(data), output.members[member], EventStreamJSONParser(), operation)


def test_frame_layout_lengths_and_crcs() -> None:
    frame = eventstream.event("messageStop", {"stopReason": "end_turn"})
    total, headers_length, prelude_crc = struct.unpack(">III", frame[:12])
    assert total == len(frame)
    assert prelude_crc == zlib.crc32(frame[:8])
    assert struct.unpack(">I", frame[-4:])[0] == zlib.crc32(frame[:-4])
    (message,) = decode(frame)
    assert message.prelude.headers_length == headers_length
    assert message.headers == {
        ":event-type": "messageStop",
        ":content-type": "application/json",
        ":message-type": "event",
    }
    assert json.loads(message.payload) == {"stopReason": "end_turn"}


def test_frames_split_at_any_byte_decode_the_same() -> None:
    data = b"".join(
        eventstream.event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": w}})
        for w in ["Hello", " wörld", " ✓"]
    )
    texts = [json.loads(m.payload)["delta"]["text"] for m in decode(data, piece=1)]
    assert texts == ["Hello", " wörld", " ✓"]


@pytest.mark.parametrize("offset", [5, 9, -1, -6])
def test_corrupted_bytes_fail_the_crc(offset: int) -> None:
    frame = bytearray(eventstream.event("messageStart", {"role": "assistant"}))
    frame[offset] ^= 0x01
    with pytest.raises(ChecksumMismatch):
        decode(bytes(frame))


def test_converse_stream_parses_with_bedrocks_service_model() -> None:
    data = b"".join(
        [
            eventstream.event("messageStart", {"role": "assistant"}),
            eventstream.event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hi"}}),
            eventstream.event("contentBlockStop", {"contentBlockIndex": 0}),
            eventstream.event("messageStop", {"stopReason": "end_turn"}),
            eventstream.event(
                "metadata",
                {
                    "usage": {"inputTokens": 3, "outputTokens": 1, "totalTokens": 4},
                    "metrics": {"latencyMs": 2},
                },
            ),
        ]
    )
    events = list(bedrock_stream("ConverseStream", data))
    assert [next(iter(e)) for e in events] == [
        "messageStart",
        "contentBlockDelta",
        "contentBlockStop",
        "messageStop",
        "metadata",
    ]
    assert events[1]["contentBlockDelta"]["delta"]["text"] == "Hi"
    assert events[4]["metadata"]["usage"] == {"inputTokens": 3, "outputTokens": 1, "totalTokens": 4}


def test_in_stream_exception_raises_the_modelled_error() -> None:
    data = eventstream.event("messageStart", {"role": "assistant"}) + eventstream.exception(
        "throttlingException", "Too many requests"
    )
    stream = iter(bedrock_stream("ConverseStream", data))
    assert next(stream) == {"messageStart": {"role": "assistant"}}
    with pytest.raises(EventStreamError) as caught:
        next(stream)
    assert caught.value.response["Error"]["Code"] == "throttlingException"
    assert caught.value.response["Error"]["Message"] == "Too many requests"


def test_invoke_stream_chunk_carries_base64_json() -> None:
    frame = eventstream.chunk({"type": "message_stop"})
    (message,) = decode(frame)
    assert message.headers[":event-type"] == "chunk"
    assert json.loads(base64.b64decode(json.loads(message.payload)["bytes"])) == {"type": "message_stop"}
    (event,) = bedrock_stream("InvokeModelWithResponseStream", frame)
    assert json.loads(event["chunk"]["bytes"]) == {"type": "message_stop"}


def test_oversized_header_is_refused() -> None:
    with pytest.raises(ValueError):
        eventstream.encode_message({"x" * 256: "v"}, b"")
