"""A loopback HTTP proxy in front of the real vLLM server that injects faults and counts.

It forwards every request to the server unchanged, except the chat completions it is told
to fail (an HTTP status) or to delay. It records how many chat completions were in flight
at once, so tests can check the client's concurrency limit from the server's side.
"""

from __future__ import annotations

import http.server
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import httpx2


@dataclass(frozen=True)
class Fault:
    status: int | None = None  # answer this HTTP status instead of forwarding
    delay_s: float = 0.0  # wait this long before answering (or forwarding)


@dataclass
class FaultProxy:
    upstream: str  # e.g. http://127.0.0.1:8000 (no /v1)
    faults: deque[Fault] = field(default_factory=deque)
    completions: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: http.server.ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def fail_next(self, *faults: Fault) -> None:
        with self._lock:
            self.faults.extend(faults)

    def reset_counts(self) -> None:
        with self._lock:
            self.completions = self.in_flight = self.max_in_flight = 0

    def start(self) -> FaultProxy:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # quiet
                pass

            def _forward(self, method: str) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                is_completion = self.path.endswith("/chat/completions")
                fault = None
                if is_completion:
                    with proxy._lock:
                        proxy.completions += 1
                        proxy.in_flight += 1
                        proxy.max_in_flight = max(proxy.max_in_flight, proxy.in_flight)
                        fault = proxy.faults.popleft() if proxy.faults else None
                try:
                    if fault is not None and fault.delay_s:
                        time.sleep(fault.delay_s)
                    if fault is not None and fault.status is not None:
                        payload = b'{"error": {"message": "injected fault", "type": "injected"}}'
                        self.send_response(fault.status)
                        self.send_header("content-type", "application/json")
                        self.send_header("content-length", str(len(payload)))
                        self.end_headers()
                        self.wfile.write(payload)
                        return
                    headers = {"content-type": self.headers.get("content-type", "application/json")}
                    answer = httpx2.request(
                        method, proxy.upstream + self.path, content=body, headers=headers, timeout=300
                    )
                    self.send_response(answer.status_code)
                    self.send_header("content-type", answer.headers.get("content-type", "application/json"))
                    self.send_header("content-length", str(len(answer.content)))
                    self.end_headers()
                    self.wfile.write(answer.content)
                finally:
                    if is_completion:
                        with proxy._lock:
                            proxy.in_flight -= 1

            def do_GET(self) -> None:
                self._forward("GET")

            def do_POST(self) -> None:
                self._forward("POST")

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
