"""Encoder for the AWS event-stream binary framing (application/vnd.amazon.eventstream).

A message is: prelude (total length, headers length, both uint32 big-endian) + CRC32 of the prelude, then the
headers, the payload, and a CRC32 of everything before it. Headers are name length (uint8), name, value type
(uint8) and a type-specific value; Bedrock only sends strings (type 7, uint16 length).
"""

from __future__ import annotations

import base64
import json
import struct
import zlib
from collections.abc import Mapping
from typing import Any

_PRELUDE = struct.Struct(">II")
_CRC = struct.Struct(">I")
_HEADER_TYPE_STRING = 7
CONTENT_TYPE = "application/vnd.amazon.eventstream"


def _crc32(data: bytes, crc: int = 0) -> int:
    return zlib.crc32(data, crc) & 0xFFFFFFFF


def encode_headers(headers: Mapping[str, str]) -> bytes:
    parts: list[bytes] = []
    for name, value in headers.items():
        raw_name = name.encode("utf-8")
        raw_value = value.encode("utf-8")
        if len(raw_name) > 255 or len(raw_value) > 65535:
            raise ValueError(f"event-stream header {name!r} is too long")
        parts.append(struct.pack(">B", len(raw_name)) + raw_name)
        parts.append(struct.pack(">BH", _HEADER_TYPE_STRING, len(raw_value)) + raw_value)
    return b"".join(parts)


def encode_message(headers: Mapping[str, str], payload: bytes) -> bytes:
    raw_headers = encode_headers(headers)
    total = _PRELUDE.size + _CRC.size + len(raw_headers) + len(payload) + _CRC.size
    prelude = _PRELUDE.pack(total, len(raw_headers))
    prelude_crc = _CRC.pack(_crc32(prelude))
    body = prelude + prelude_crc + raw_headers + payload
    return body + _CRC.pack(_crc32(body))


def _json(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode("utf-8")


def event(event_type: str, data: Any) -> bytes:
    """A normal event, e.g. ``contentBlockDelta`` of ConverseStream."""
    return encode_message(
        {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"},
        _json(data),
    )


def chunk(data: Any) -> bytes:
    """An InvokeModelWithResponseStream ``chunk`` event: the model's JSON, base64-encoded in ``bytes``."""
    return event("chunk", {"bytes": base64.b64encode(_json(data)).decode("ascii")})


def exception(exception_type: str, message: str) -> bytes:
    """A modelled in-stream error, e.g. ``throttlingException`` (the name is lower camel case on the wire)."""
    return encode_message(
        {
            ":exception-type": exception_type,
            ":content-type": "application/json",
            ":message-type": "exception",
        },
        _json({"message": message}),
    )
