"""A fault-injecting HTTP proxy to put in front of the storage emulator, recording every request it saw.

    with FaultyProxy(fake_gcs.url, [Fault("503", methods=("PUT", "POST"), nth={1, 3})]) as proxy:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
        ...
        assert [s.fault for s in proxy.seen if s.fault] == ["503", "503"]

Actions:
  "status"          answer with `status` and a GCS-shaped JSON error body without forwarding (503 by default)
  "reset"           read the request, then drop the connection (TCP RST) without forwarding it
  "reset-request"   read only half of the request body (an upload cut off midway), then drop the connection
  "reset-after"     forward it (the emulator applies it), then drop the connection: the answer is lost
  "truncate"        forward it, send the headers and half of the body, then drop the connection
  "corrupt"         forward it and flip one byte in the middle of the response body
  "corrupt-request" flip one byte in the middle of the request body, then forward it
  "stall"           forward it, then send nothing for `delay` seconds before answering (a hung server)
  "stall-body"      forward it, send the headers and half of the body, then stall `delay` seconds and drop
Matching requests are counted per fault; `nth` picks which (1-based), None means all of them.
Responses pointing at the emulator (Location headers, JSON bodies) are rewritten to point here.

`token=True` also serves an OAuth token endpoint at `/token` (not forwarded): each POST answers a
fresh access token `token-N`, so a client with refreshable credentials can be sent a 401 mid-transfer
and be seen refreshing (Fault("status", path="/token", status=400) makes the refresh fail).
`port` binds a given port: a client may be pointed at it before it listens (connection refused).
"""

from __future__ import annotations

import http.client
import json
import socket
import struct
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "te", "trailer", "upgrade"}


def gcs_error(code: int, message: str, reason: str, domain: str = "global") -> dict:
    """The JSON body the real Cloud Storage JSON API sends with an error."""
    return {
        "error": {
            "code": code,
            "message": message,
            "errors": [{"message": message, "domain": domain, "reason": reason}],
        }
    }


@dataclass
class Fault:
    action: str  # see the module docstring
    methods: Collection[str] | None = ("PUT", "POST")  # None: any method
    path: str | None = None  # substring of path+query the request must contain
    nth: Collection[int] | None = None  # which matching requests (1-based); None: all
    status: int = 503
    body: dict | None = None  # for "status": the JSON error body (default: a GCS-shaped one)
    delay: float = 5.0  # for "stall" / "stall-body": seconds of silence
    count: int = 0  # matching requests seen so far

    def matches(self, method: str, target: str) -> bool:
        return (self.methods is None or method in self.methods) and (self.path is None or self.path in target)


@dataclass
class Seen:
    method: str
    target: str  # path and query
    status: int | None  # what the client got; None when the connection was dropped first
    fault: str | None  # the action applied, if any
    request_bytes: int = 0
    headers: dict[str, str] = field(default_factory=dict)  # request headers, lower-case names


class _Dropped(Exception):
    pass


class FaultyProxy:
    def __init__(
        self,
        upstream: str,
        faults: Collection[Fault] = (),
        *,
        throttle_bps: float | None = None,
        throttle_path: str = "alt=media",
        token: bool = False,
        port: int = 0,
    ) -> None:
        self.upstream = urlsplit(upstream)
        self.faults: list[Fault] = list(faults)
        self.throttle_bps = throttle_bps  # slows response bodies of matching requests (downloads)
        self.throttle_path = throttle_path
        self.token = token
        self.tokens_issued = 0
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()  # ends stalls early when the proxy stops
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._server.daemon_threads = True
        self._server.handle_error = lambda request, client_address: None  # dropped connections are the point
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FaultyProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def requests(self, *methods: str) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if not methods or s.method in methods]

    def _admit(self, seen: Seen) -> Fault | None:
        """Record the request and pick the fault for it, in one step (so `seen` is in arrival order)."""
        with self._lock:
            self.seen.append(seen)
            chosen = None
            for fault in self.faults:
                if fault.matches(seen.method, seen.target):
                    fault.count += 1
                    if chosen is None and (fault.nth is None or fault.count in fault.nth):
                        chosen = fault
            seen.fault = chosen.action if chosen else None
            return chosen

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self
        up_host = f"{self.upstream.hostname}:{self.upstream.port}"

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def handle_one_request(self) -> None:
                try:
                    super().handle_one_request()
                except (_Dropped, ConnectionError, OSError):
                    self.close_connection = True

            def finish(self) -> None:
                try:
                    super().finish()
                except OSError:
                    pass

            def _body(self, half: bool = False) -> bytes:
                if half:  # then the caller drops the connection with the rest unread
                    length = int(self.headers.get("Content-Length") or 0)
                    return self.rfile.read(length // 2) if length > 1 else self.rfile.read1(1024)
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = bytearray()
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return bytes(out)
                        out += self.rfile.read(size)
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _drop(self) -> None:
                try:
                    self.wfile.flush()
                except OSError:
                    pass
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
                self.close_connection = True
                raise _Dropped()

            def _send(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()

            def _proxy(self) -> None:
                method, target = self.command, self.path
                seen = Seen(method, target, None, None, 0, {k.lower(): v for k, v in self.headers.items()})
                fault = proxy._admit(seen)
                action = seen.fault
                body = self._body(half=action == "reset-request")
                seen.request_bytes = len(body)
                if action in ("reset", "reset-request"):
                    self._drop()
                if action == "status":
                    assert fault is not None
                    payload = json.dumps(
                        fault.body or gcs_error(fault.status, "Injected fault", "backendError")
                    ).encode()
                    self._send(fault.status, [("Content-Type", "application/json; charset=UTF-8")], payload)
                    self.wfile.write(payload)
                    seen.status = fault.status
                    return
                if proxy.token and method == "POST" and urlsplit(target).path == "/token":
                    with proxy._lock:
                        proxy.tokens_issued += 1
                        issued = proxy.tokens_issued
                    payload = json.dumps(
                        {"access_token": f"token-{issued}", "expires_in": 3600, "token_type": "Bearer"}
                    ).encode()
                    self._send(200, [("Content-Type", "application/json")], payload)
                    self.wfile.write(payload)
                    seen.status = 200
                    return
                if action == "corrupt-request" and body:
                    mid = len(body) // 2
                    body = body[:mid] + bytes([body[mid] ^ 0xFF]) + body[mid + 1 :]

                conn = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=120)
                try:
                    headers = {
                        k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP and k.lower() != "host"
                    }
                    headers["Host"] = up_host
                    headers["Content-Length"] = str(len(body))
                    conn.request(method, target, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                finally:
                    conn.close()
                out_headers = []
                for k, v in resp.getheaders():
                    if k.lower() in HOP_BY_HOP:
                        continue
                    if k.lower() == "location":
                        v = v.replace(up_host, self.headers.get("Host") or up_host)
                    out_headers.append((k, v))
                if "json" in (resp.getheader("Content-Type") or ""):
                    data = data.replace(up_host.encode(), (self.headers.get("Host") or up_host).encode())
                if action == "reset-after":
                    self._drop()
                if action == "corrupt" and data:
                    mid = len(data) // 2
                    data = data[:mid] + bytes([data[mid] ^ 0xFF]) + data[mid + 1 :]
                if action == "stall":
                    assert fault is not None
                    proxy._stop.wait(fault.delay)
                self._send(resp.status, out_headers, data)
                seen.status = resp.status
                if action in ("truncate", "stall-body"):
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    seen.status = None
                    if action == "stall-body":
                        assert fault is not None
                        proxy._stop.wait(fault.delay)
                    self._drop()
                if method == "HEAD":
                    return
                throttle = proxy.throttle_bps if proxy.throttle_path in target else None
                step = 64 * 1024
                for i in range(0, len(data), step):
                    self.wfile.write(data[i : i + step])
                    if throttle:
                        time.sleep(step / throttle)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _proxy

        return Handler
