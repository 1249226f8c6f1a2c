"""A Bedrock Runtime stub speaking Bedrock's wire protocol (REST-JSON + AWS event-stream), for the stack.

It verifies SigV4 (service ``bedrock``), including temporary credentials issued by moto's STS (IRSA,
simulated), answers deterministically, records every call and has fault knobs under ``/_stub/``. It is a
fake by design: the point is to drive LiteLLM and boto3 with real wire traffic and to inject faults real
Bedrock would not give on demand.

Run standalone: ``python -m tests.stack.bedrock_stub --port 8090`` (in the image: ``python -m bedrock_stub``).
"""
