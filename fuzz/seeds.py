#!/usr/bin/env python3
"""Seeds for the fuzz targets: real request bodies and paths from ../shared/captures (read in
place, never copied into the repository), and built-in samples of the provider answers the usage
tap and the event-stream decoder read. Each seed is the target's input format: a control byte,
then the bytes (see each fuzz_targets/*.rs)."""

import base64
import json
import os
import struct
import sys
import zlib
from pathlib import Path

CAPTURES = Path(__file__).resolve().parent.parent.parent / "shared" / "captures"


def eventstream(headers, payload):
    """One AWS event-stream message (string headers), as Bedrock frames them."""
    h = b""
    for k, v in headers:
        kb, vb = k.encode(), v.encode()
        h += bytes([len(kb)]) + kb + b"\x07" + struct.pack(">H", len(vb)) + vb
    total = 12 + len(h) + len(payload) + 4
    prelude = struct.pack(">II", total, len(h))
    msg = prelude + struct.pack(">I", zlib.crc32(prelude)) + h + payload
    return msg + struct.pack(">I", zlib.crc32(msg))


def bedrock_chunk(event):
    payload = json.dumps({"bytes": base64.b64encode(json.dumps(event).encode()).decode()}).encode()
    return eventstream([(":event-type", "chunk"), (":content-type", "application/json"), (":message-type", "event")], payload)


ANTHROPIC_EVENTS = [
    {"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
                                          "content": [], "usage": {"input_tokens": 12, "cache_read_input_tokens": 3, "output_tokens": 1}}},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "one, two, three"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 7}},
    {"type": "message_stop"},
]
ANTHROPIC_SSE = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in ANTHROPIC_EVENTS).encode()
ANTHROPIC_JSON = json.dumps({"id": "msg_1", "type": "message", "content": [{"type": "text", "text": "hi"}],
                             "usage": {"input_tokens": 12, "output_tokens": 7, "service_tier": "standard"}}).encode()
OPENAI_SSE = (
    b'data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
    b'data: {"id":"c1","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,'
    b'"prompt_tokens_details":{"cached_tokens":4}}}\n\ndata: [DONE]\n\n'
)
RESPONSES_SSE = (
    b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","delta":"hi"}\n\n'
    b'event: response.completed\ndata: {"type":"response.completed","response":{"usage":{"input_tokens":9,'
    b'"output_tokens":2,"input_tokens_details":{"cached_tokens":0}}}}\n\n'
)
BEDROCK_STREAM = b"".join(bedrock_chunk(e) for e in ANTHROPIC_EVENTS)


def captures():
    for p in sorted(CAPTURES.glob("*.json")):
        try:
            c = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        body = c.get("body")
        yield c.get("path") or "/", (json.dumps(body).encode() if isinstance(body, (dict, list)) else None)


def seeds(target):
    caps = list(captures())
    if target == "usage":
        # control: protocol = c % 3 (anthropic, openai, bedrock); type = c / 3 % 3 (sse, json, eventstream)
        yield bytes([0]) + ANTHROPIC_SSE
        yield bytes([3]) + ANTHROPIC_JSON
        yield bytes([1]) + OPENAI_SSE
        yield bytes([1]) + RESPONSES_SSE
        yield bytes([8]) + BEDROCK_STREAM
        yield bytes([0x80]) + ANTHROPIC_SSE
    elif target == "eventstream":
        yield bytes([5]) + BEDROCK_STREAM
        yield bytes([9]) + eventstream([(":message-type", "exception"), (":exception-type", "throttlingException")], b'{"message":"slow down"}')
    elif target == "request":
        for _, body in caps:
            if body:
                for c in (0, 1, 2):
                    yield bytes([c]) + body
        yield bytes([3]) + b'{"custom_id":"a","params":{"model":"m","max_tokens":5,"messages":[]}}\n'
    elif target == "multipart":
        yield (b"multipart/form-data; boundary=X\n--X\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n"
               b"--X\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jsonl\"\r\nContent-Type: application/jsonl\r\n\r\n"
               b'{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-5"}}\r\n--X--\r\n')
    elif target == "path":
        for path, _ in caps:
            for c in (1, 5, 9):
                yield bytes([c]) + path.encode()
        yield bytes([1]) + b"/model/us.anthropic.claude-sonnet-4-5-v1%3A0/invoke-with-response-stream"
        yield bytes([1]) + b"/openai/deployments/gpt-5/chat/completions"
    elif target == "bedrock":
        for _, body in caps:
            if body and b'"messages"' in body:
                yield bytes([0]) + body
                yield bytes([2]) + body
        yield bytes([1]) + BEDROCK_STREAM
    elif target == "audit_lines":
        # control 1: edits (offset u16 le, byte) to a valid chain; 0: a whole day file.
        yield bytes([1, 10, 0, ord("x")])
        yield bytes([0]) + b'{"seq":1,"prev":"' + b"0" * 64 + b'"}\n'


def main():
    out, targets = Path(sys.argv[1]), sys.argv[2:]
    for t in targets:
        d = out / t
        d.mkdir(parents=True, exist_ok=True)
        for i, s in enumerate(seeds(t)):
            (d / f"seed-{i:03}").write_bytes(s)


if __name__ == "__main__":
    main()
