"""The stub's HTTP server (aiohttp): Bedrock Runtime's four operations and the ``/_stub/`` admin endpoints."""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from . import eventstream, models, sigv4
from .credentials import CredentialStore, parse_static

log = logging.getLogger("bedrock_stub")

_PATH_RE = re.compile(
    r"^/model/(?P<model>.+)/(?P<op>converse|converse-stream|invoke|invoke-with-response-stream)$"
)
_CREDENTIAL_RE = re.compile(r"Credential=([^/,\s]+)/")
OPERATIONS = {
    "converse": "Converse",
    "converse-stream": "ConverseStream",
    "invoke": "InvokeModel",
    "invoke-with-response-stream": "InvokeModelWithResponseStream",
}
# Status -> Bedrock's error code and message, for the failure knob.
FAULTS = {
    400: ("ValidationException", "The stub was told to reject this request."),
    408: ("ModelTimeoutException", "Model has timed out in processing the request. Try your request again."),
    424: ("ModelErrorException", "The model returned an error."),
    429: ("ThrottlingException", "Too many requests, please wait before trying again."),
    500: ("InternalServerException", "The server encountered an error processing your request."),
    503: ("ServiceUnavailableException", "Bedrock is unable to process your request."),
}
INVALID_MODEL = "The provided model identifier is invalid."
UNSUPPORTED_OPERATION = (
    "This action doesn't support the model that you provided. Try again with a supported model."
)
SIGV4_MODES = ("verify", "shape", "off")


@dataclass
class Config:
    host: str = "127.0.0.1"
    port: int = 8090
    region: str = "us-east-1"
    sigv4: str = "verify"  # verify: recompute signatures; shape: check header/scope/date only; off: no checks
    sts_url: str | None = None  # moto server whose issued credentials are accepted
    credentials: str = ""  # static AKID:SECRET[:TOKEN],... accepted as well
    access_log: bool = False
    max_calls: int = 10_000


@dataclass
class Fault:
    status: int
    count: int
    code: str
    message: str
    operations: set[str] | None = None  # API names (Converse, …); None: every operation
    mid_stream: bool = False  # streaming operations: start the stream, then send an exception event

    def applies(self, operation: str) -> bool:
        return self.count > 0 and (self.operations is None or operation in self.operations)


@dataclass
class Knobs:
    latency_ms: float = 0.0
    stream_delay_ms: float = 0.0
    fault: Fault | None = None
    usage: dict[str, int] | None = None  # {"inputTokens": …, "outputTokens": …}
    usage_calls: int | None = None  # how many calls report ``usage``; None: until reset

    def describe(self) -> dict[str, Any]:
        fault = None
        if self.fault is not None:
            fault = {
                "status": self.fault.status,
                "count": self.fault.count,
                "code": self.fault.code,
                "message": self.fault.message,
                "midStream": self.fault.mid_stream,
                "operations": sorted(self.fault.operations) if self.fault.operations else None,
            }
        return {
            "latencyMs": self.latency_ms,
            "streamDelayMs": self.stream_delay_ms,
            "fail": fault,
            "usage": self.usage,
            "usageCalls": self.usage_calls,
        }


class BedrockError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _request_id() -> str:
    return str(uuid.uuid4())


def error_response(status: int, code: str, message: str) -> web.Response:
    namespace = "com.amazon.coral.service" if status == 403 else "com.amazon.bedrock"
    return web.json_response(
        {"message": message},
        status=status,
        headers={
            "x-amzn-ErrorType": f"{code}:http://internal.amazon.com/coral/{namespace}/",
            "x-amzn-RequestId": _request_id(),
        },
    )


def _lower_camel(code: str) -> str:
    return code[0].lower() + code[1:]


class Stub:
    def __init__(self, config: Config) -> None:
        if config.sigv4 not in SIGV4_MODES:
            raise ValueError(f"sigv4 mode must be one of {SIGV4_MODES}, not {config.sigv4!r}")
        self.config = config
        self.knobs = Knobs()
        self.calls: collections.deque[dict[str, Any]] = collections.deque(maxlen=config.max_calls)
        self.sequence = 0
        self.credentials = CredentialStore(parse_static(config.credentials), config.sts_url)

    # --- Bedrock operations -------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        body = await request.read()
        raw_path = request.raw_path.split("?", 1)[0]
        query = request.raw_path.partition("?")[2]
        match = _PATH_RE.match(raw_path)
        call: dict[str, Any] = {
            "seq": 0,
            "time": time.time(),
            "operation": None,
            "modelId": None,
            "rawModelId": None,
            "accessKeyId": None,
            "sessionToken": False,
            "signatureVerified": False,
            "status": 0,
            "errorCode": None,
            "userAgent": request.headers.get("User-Agent"),
            "body": None,
        }
        self.sequence += 1
        call["seq"] = self.sequence
        self.calls.append(call)
        try:
            if match is None:
                raise BedrockError(404, "UnknownOperationException", "Unknown operation")
            call["rawModelId"] = match["model"]
            call["modelId"] = model_id = unquote(match["model"])
            call["operation"] = operation = OPERATIONS[match["op"]]
            call["body"] = _decode_body(body)
            await self._authenticate(request, raw_path, query, body, call)
            model = models.resolve(model_id)
            if model is None:
                raise BedrockError(400, "ValidationException", INVALID_MODEL)
            if not (model.converse if operation.startswith("Converse") else model.invoke):
                raise BedrockError(400, "ValidationException", UNSUPPORTED_OPERATION)
            if model.family.startswith("titan") and operation == "InvokeModelWithResponseStream":
                raise BedrockError(400, "ValidationException", UNSUPPORTED_OPERATION)
            if not isinstance(call["body"], dict):
                raise BedrockError(
                    400,
                    "ValidationException",
                    "Malformed input request, please reformat your input and try again.",
                )
            if self.knobs.latency_ms > 0:
                await asyncio.sleep(self.knobs.latency_ms / 1000)
            fault = self._take_fault(operation)
            if fault is not None and not (fault.mid_stream and operation.endswith("Stream")):
                raise BedrockError(fault.status, fault.code, fault.message)
            usage = self._take_usage()
            response = await self._dispatch(request, operation, model, call["body"], usage, fault, started)
            call["status"] = response.status
            return response
        except sigv4.AuthError as error:
            call["status"], call["errorCode"] = error.status, error.code
            return error_response(error.status, error.code, error.message)
        except BedrockError as error:
            call["status"], call["errorCode"] = error.status, error.code
            return error_response(error.status, error.code, error.message)

    async def _authenticate(
        self, request: web.Request, raw_path: str, query: str, body: bytes, call: dict[str, Any]
    ) -> None:
        if self.config.sigv4 == "off":
            return
        # Recorded before any check, so refused calls show who tried.
        claimed = _CREDENTIAL_RE.search(request.headers.get("Authorization", ""))
        call["accessKeyId"] = claimed.group(1) if claimed else None
        call["sessionToken"] = "X-Amz-Security-Token" in request.headers
        headers = list(request.headers.items())
        signed = sigv4.inspect(headers, self.config.region)
        call["accessKeyId"] = signed.access_key_id
        call["sessionToken"] = signed.session_token is not None
        if self.config.sigv4 == "verify":
            secret = await self.credentials.lookup(signed.access_key_id)
            sigv4.check_signature(
                signed,
                secret,
                method=request.method,
                raw_path=raw_path,
                query_string=query,
                headers=headers,
                body=body,
            )
            call["signatureVerified"] = True

    def _take_fault(self, operation: str) -> Fault | None:
        fault = self.knobs.fault
        if fault is None or not fault.applies(operation):
            return None
        fault.count -= 1
        if fault.count <= 0:
            self.knobs.fault = None
        return fault

    def _take_usage(self) -> dict[str, int] | None:
        usage = self.knobs.usage
        if usage is None:
            return None
        if self.knobs.usage_calls is not None:
            self.knobs.usage_calls -= 1
            if self.knobs.usage_calls <= 0:
                self.knobs.usage, self.knobs.usage_calls = None, None
        return usage

    async def _dispatch(
        self,
        request: web.Request,
        operation: str,
        model: models.Model,
        body: dict[str, Any],
        usage: dict[str, int] | None,
        fault: Fault | None,
        started: float,
    ) -> web.StreamResponse:
        if model.family.startswith("titan"):
            return self._titan(model, body, usage, started)
        if operation in ("Converse", "ConverseStream"):
            inference = body.get("inferenceConfig") or {}
            reply = models.reply(model, models.prompt_text(body), _int_or_none(inference.get("maxTokens")))
        else:
            _require_anthropic(body)
            reply = models.reply(model, models.prompt_text(body), _int_or_none(body.get("max_tokens")))
        input_tokens, output_tokens = reply.input_tokens, reply.output_tokens
        if usage is not None:
            input_tokens = usage.get("inputTokens", input_tokens)
            output_tokens = usage.get("outputTokens", output_tokens)
        if operation == "Converse":
            return self._converse(reply, input_tokens, output_tokens, started)
        if operation == "InvokeModel":
            return self._invoke_anthropic(reply, input_tokens, output_tokens, started)
        frames = (_converse_frames if operation == "ConverseStream" else _anthropic_frames)(
            reply, input_tokens, output_tokens, started
        )
        return await self._stream(request, frames, fault, operation)

    def _converse(
        self, reply: models.Reply, input_tokens: int, output_tokens: int, started: float
    ) -> web.Response:
        content: list[dict[str, Any]] = []
        if reply.reasoning:
            content.append({"reasoningContent": {"reasoningText": {"text": "".join(reply.reasoning)}}})
        content.append({"text": reply.text})
        return web.json_response(
            {
                "output": {"message": {"role": "assistant", "content": content}},
                "stopReason": reply.stop_reason,
                "usage": {
                    "inputTokens": input_tokens,
                    "outputTokens": output_tokens,
                    "totalTokens": input_tokens + output_tokens,
                },
                "metrics": {"latencyMs": _elapsed_ms(started)},
            },
            headers={"x-amzn-RequestId": _request_id()},
        )

    def _invoke_anthropic(
        self, reply: models.Reply, input_tokens: int, output_tokens: int, started: float
    ) -> web.Response:
        return web.json_response(
            {
                "id": "msg_bdrk_" + uuid.uuid4().hex[:24],
                "type": "message",
                "role": "assistant",
                "model": "claude-stub",
                "content": [{"type": "text", "text": reply.text}],
                "stop_reason": reply.stop_reason,
                "stop_sequence": None,
                "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
            },
            headers=_invoke_headers(input_tokens, output_tokens, started),
        )

    def _titan(
        self, model: models.Model, body: dict[str, Any], usage: dict[str, int] | None, started: float
    ) -> web.Response:
        text = body.get("inputText")
        if not isinstance(text, str) or not text:
            raise BedrockError(
                400,
                "ValidationException",
                "Malformed input request: #: required key [inputText] not found, please reformat "
                "your input and try again.",
            )
        tokens = usage.get("inputTokens", models.count_tokens(text)) if usage else models.count_tokens(text)
        if model.family == "titan-embed-v1":
            vector = models.embedding(text, 1536, normalize=False)
            payload: dict[str, Any] = {"embedding": vector, "inputTextTokenCount": tokens}
        else:
            dimensions = body.get("dimensions", 1024)
            if dimensions not in models.TITAN_V2_DIMENSIONS:
                raise BedrockError(
                    400,
                    "ValidationException",
                    f"Malformed input request: #/dimensions: {dimensions} is not a valid enum "
                    "value, please reformat your input and try again.",
                )
            vector = models.embedding(text, int(dimensions), normalize=bool(body.get("normalize", True)))
            payload = {
                "embedding": vector,
                "embeddingsByType": {"float": vector},
                "inputTextTokenCount": tokens,
            }
        return web.json_response(payload, headers=_invoke_headers(tokens, 0, started))

    async def _stream(
        self, request: web.Request, frames: list[bytes], fault: Fault | None, operation: str
    ) -> web.StreamResponse:
        headers = {"Content-Type": eventstream.CONTENT_TYPE, "x-amzn-RequestId": _request_id()}
        if operation == "InvokeModelWithResponseStream":
            headers["X-Amzn-Bedrock-Content-Type"] = "application/json"
        response = web.StreamResponse(status=200, headers=headers)
        await response.prepare(request)
        if fault is not None:
            # Mid-stream failure: the first frame goes out, then Bedrock's in-stream exception event.
            frames = [*frames[:1], eventstream.exception(_lower_camel(fault.code), fault.message)]
        delay = self.knobs.stream_delay_ms / 1000
        for index, frame in enumerate(frames):
            if delay and index:
                await asyncio.sleep(delay)
            await response.write(frame)
        await response.write_eof()
        return response

    # --- admin ----------------------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "status": "ok",
                "sigv4": self.config.sigv4,
                "region": self.config.region,
                "stsUrl": self.config.sts_url,
            }
        )

    async def get_knobs(self, request: web.Request) -> web.Response:
        return web.json_response(self.knobs.describe())

    async def set_knobs(self, request: web.Request) -> web.Response:
        try:
            spec = await request.json()
            if not isinstance(spec, dict):
                raise ValueError("expected a JSON object")
            self._apply_knobs(spec)
        except (ValueError, TypeError, KeyError) as error:
            return web.json_response({"error": str(error)}, status=400)
        return web.json_response(self.knobs.describe())

    def _apply_knobs(self, spec: dict[str, Any]) -> None:
        unknown = set(spec) - {"latencyMs", "streamDelayMs", "fail", "usage", "usageCalls"}
        if unknown:
            raise ValueError(f"unknown knobs: {sorted(unknown)}")
        if "latencyMs" in spec:
            self.knobs.latency_ms = float(spec["latencyMs"])
        if "streamDelayMs" in spec:
            self.knobs.stream_delay_ms = float(spec["streamDelayMs"])
        if "fail" in spec:
            self.knobs.fault = _parse_fault(spec["fail"])
        if "usage" in spec:
            usage = spec["usage"]
            if usage is not None and not (
                isinstance(usage, dict)
                and usage
                and all(
                    k in ("inputTokens", "outputTokens") and isinstance(v, int) and v >= 0
                    for k, v in usage.items()
                )
            ):
                raise ValueError("usage must be {inputTokens?: int, outputTokens?: int} or null")
            self.knobs.usage = usage
            self.knobs.usage_calls = None
        if "usageCalls" in spec:
            self.knobs.usage_calls = None if spec["usageCalls"] is None else int(spec["usageCalls"])

    async def reset(self, request: web.Request) -> web.Response:
        self.knobs = Knobs()
        self.calls.clear()
        return web.json_response(self.knobs.describe())

    async def get_calls(self, request: web.Request) -> web.Response:
        return web.json_response(list(self.calls))

    async def clear_calls(self, request: web.Request) -> web.Response:
        self.calls.clear()
        return web.json_response([])


def _parse_fault(spec: Any) -> Fault | None:
    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise ValueError("fail must be an object like {status: 429, count: 1}")
    status = int(spec.get("status", 429))
    default_code, default_message = FAULTS.get(status, ("InternalServerException", "Injected failure."))
    operations = spec.get("operations")
    if operations is not None and not set(operations) <= set(OPERATIONS.values()):
        raise ValueError(f"operations must be among {sorted(OPERATIONS.values())}")
    return Fault(
        status=status,
        count=int(spec.get("count", 1)),
        code=str(spec.get("code", default_code)),
        message=str(spec.get("message", default_message)),
        operations=set(operations) if operations is not None else None,
        mid_stream=bool(spec.get("midStream", False)),
    )


def _decode_body(body: bytes) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return body.decode("utf-8", errors="replace")


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _require_anthropic(body: dict[str, Any]) -> None:
    for key in ("messages", "max_tokens"):
        if key not in body:
            raise BedrockError(
                400,
                "ValidationException",
                f"Malformed input request: #: required key [{key}] not found, please reformat your "
                "input and try again.",
            )


def _elapsed_ms(started: float) -> int:
    return max(1, round((time.perf_counter() - started) * 1000))


def _invoke_headers(input_tokens: int, output_tokens: int, started: float) -> dict[str, str]:
    return {
        "x-amzn-RequestId": _request_id(),
        "X-Amzn-Bedrock-Invocation-Latency": str(_elapsed_ms(started)),
        "X-Amzn-Bedrock-Input-Token-Count": str(input_tokens),
        "X-Amzn-Bedrock-Output-Token-Count": str(output_tokens),
    }


def _converse_frames(
    reply: models.Reply, input_tokens: int, output_tokens: int, started: float
) -> list[bytes]:
    frames = [eventstream.event("messageStart", {"role": "assistant"})]
    index = 0
    if reply.reasoning:
        frames += [
            eventstream.event(
                "contentBlockDelta",
                {"contentBlockIndex": index, "delta": {"reasoningContent": {"text": piece}}},
            )
            for piece in reply.reasoning
        ]
        frames.append(eventstream.event("contentBlockStop", {"contentBlockIndex": index}))
        index += 1
    frames += [
        eventstream.event("contentBlockDelta", {"contentBlockIndex": index, "delta": {"text": piece}})
        for piece in reply.pieces
    ]
    frames.append(eventstream.event("contentBlockStop", {"contentBlockIndex": index}))
    frames.append(eventstream.event("messageStop", {"stopReason": reply.stop_reason}))
    frames.append(
        eventstream.event(
            "metadata",
            {
                "usage": {
                    "inputTokens": input_tokens,
                    "outputTokens": output_tokens,
                    "totalTokens": input_tokens + output_tokens,
                },
                "metrics": {"latencyMs": _elapsed_ms(started)},
            },
        )
    )
    return frames


def _anthropic_frames(
    reply: models.Reply, input_tokens: int, output_tokens: int, started: float
) -> list[bytes]:
    message_id = "msg_bdrk_" + uuid.uuid4().hex[:24]
    events: list[dict[str, Any]] = [
        {
            "type": "message_start",
            "message": {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": "claude-stub",
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": input_tokens, "output_tokens": 1},
            },
        },
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    ]
    events += [
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}
        for piece in reply.pieces
    ]
    events += [
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": reply.stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": output_tokens},
        },
        {
            "type": "message_stop",
            "amazon-bedrock-invocationMetrics": {
                "inputTokenCount": input_tokens,
                "outputTokenCount": output_tokens,
                "invocationLatency": _elapsed_ms(started),
                "firstByteLatency": _elapsed_ms(started),
            },
        },
    ]
    return [eventstream.chunk(item) for item in events]


def build_app(config: Config) -> web.Application:
    stub = Stub(config)
    app = web.Application(client_max_size=32 * 1024 * 1024)
    app["stub"] = stub
    app.router.add_get("/_stub/health", stub.health)
    app.router.add_get("/_stub/knobs", stub.get_knobs)
    app.router.add_post("/_stub/knobs", stub.set_knobs)
    app.router.add_post("/_stub/reset", stub.reset)
    app.router.add_get("/_stub/calls", stub.get_calls)
    app.router.add_delete("/_stub/calls", stub.clear_calls)
    # One catch-all route; the model id (any characters, %2F included) is cut out of the raw path by _PATH_RE.
    app.router.add_post("/model/{tail:.+}", stub.handle)

    async def close_credentials(_: web.Application) -> None:
        await stub.credentials.close()

    app.on_cleanup.append(close_credentials)
    return app
