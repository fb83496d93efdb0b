"""A stdlib HTTP server speaking just enough of the OpenAI API to answer one chat completion,
or to misbehave as a hostile endpoint would (huge answer, trickled bytes). It counts requests."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class Behaviour:
    answer: str = "<loc0100><loc0200><loc0300><loc0400> cat"
    extra_bytes: int = 0  # padding inside the JSON, to make the response large
    trickle_s: float = 0.0  # delay between 1-byte writes of the body
    requests: list[str] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)  # of the POSTed requests
    models: list[dict[str, object]] = field(default_factory=lambda: [{"id": "fake", "object": "model"}])
    models_status: int = 200  # what GET /v1/models answers with
    models_delay_s: float = 0.0  # how long GET /v1/models keeps the caller waiting first
    raw_body: bytes | None = None  # what POST answers instead of a chat completion, as it is
    raw_headers: dict[str, str] = field(default_factory=dict)  # sent with it (Content-Encoding, ...)
    models_raw: bytes | None = None  # what GET /v1/models answers instead of the list
    accept_encodings: list[str] = field(default_factory=list)  # the Accept-Encoding of each POST
    authorizations: list[str] = field(default_factory=list)  # and its Authorization header


def _body(behaviour: Behaviour) -> bytes:
    reply = {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": "fake",
        "choices": [
            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": behaviour.answer}}
        ],
    }
    text = json.dumps(reply)
    return (text[:-1] + " " * behaviour.extra_bytes + "}").encode()


@contextmanager
def fake_endpoint(behaviour: Behaviour) -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            behaviour.requests.append(self.path)
            time.sleep(behaviour.models_delay_s)
            body = behaviour.models_raw or json.dumps({"object": "list", "data": behaviour.models}).encode()
            self.send_response(behaviour.models_status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):  # the client cut a hostile list off
                pass

        def do_POST(self) -> None:
            behaviour.requests.append(self.path)
            behaviour.bodies.append(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            behaviour.accept_encodings.append(self.headers.get("Accept-Encoding", ""))
            behaviour.authorizations.append(self.headers.get("Authorization", ""))
            body = _body(behaviour) if behaviour.raw_body is None else behaviour.raw_body
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            for name, value in behaviour.raw_headers.items():
                self.send_header(name, value)
            self.send_header("Transfer-Encoding", "chunked")  # no length announced: only reading can tell
            self.end_headers()
            try:
                step = 1 if behaviour.trickle_s else 1 << 16
                for i in range(0, len(body), step):
                    part = body[i : i + step]
                    self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                    self.wfile.flush()
                    if behaviour.trickle_s:
                        time.sleep(behaviour.trickle_s)
                self.wfile.write(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
