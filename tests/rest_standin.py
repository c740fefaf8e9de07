"""What the REST stand-ins (Compute, Artifact Registry, Cloud Build) share: the request they record,
reading one off the wire, and writing a JSON (or plain-text) answer."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    body: Any


def read_request(h: BaseHTTPRequestHandler) -> Request:
    """The request `h` is handling: unquoted path, last value of each query key, JSON body (else text)."""
    split = urlsplit(h.path)
    length = int(h.headers.get("Content-Length") or 0)
    raw = h.rfile.read(length) if length else b""
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = raw.decode("utf-8", "replace")
    return Request(h.command, unquote(split.path), {k: v[-1] for k, v in parse_qs(split.query).items()}, body)


def send_reply(h: BaseHTTPRequestHandler, code: int, payload: Any) -> None:
    """A JSON answer; a str payload goes as plain text (the metadata server's attributes)."""
    text = isinstance(payload, str)
    data = payload.encode() if text else json.dumps(payload).encode()
    h.send_response(code)
    h.send_header("Content-Type", "text/plain" if text else "application/json; charset=UTF-8")
    h.send_header("Content-Length", str(len(data)))
    h.end_headers()
    h.wfile.write(data)


def matching(requests: list[Request], method: str | None, path: str) -> list[Request]:
    """The requests whose method matches (any, for None) and whose path contains the regex `path`."""
    return [r for r in requests if (method is None or r.method == method) and re.search(path, r.path)]


def contract_violations(api: str, req: Request) -> list[str]:
    """What Google's published contract for `api` rejects in `req` (see tests/discovery.py)."""
    from tests.discovery import contract_errors

    return contract_errors(api, req.method, req.path, req.query, req.body)


def reply_invalid(h: BaseHTTPRequestHandler, errors: list[str]) -> None:
    """400 INVALID_ARGUMENT, as Google answers a request its schema rejects."""
    from tests.google_errors import google_error

    send_reply(h, 400, google_error(400, "INVALID_ARGUMENT", "; ".join(errors)))
