"""A local stand-in for the IAM-related REST APIs `newsclf cloud setup` uses for the VMs' service account.

One server, driven by the real clients: IAM v1 service accounts (get, create, testIamPermissions;
through google-auth's AuthorizedSession), Resource Manager v3 project IAM policies and Secret
Manager v1 secret IAM policies (resourcemanager_v3 / secretmanager_v1, transport="rest"), and,
with `storage_upstream`, Cloud Storage bucket IAM policies (GET/PUT /storage/v1/b/BUCKET/iam),
which fake-gcs-server does not serve: every other storage request is passed on to it.

Every request is recorded and checked against Google's discovery document of its API
(tests/discovery.py: 400 INVALID_ARGUMENT as Google answers). State is kept, so setup is
idempotent against it. Policies carry etags as Google's do: a setIamPolicy whose etag is not
the current one is refused (409 ABORTED; Cloud Storage: 412), so only a read-modify-write passes.
A grant naming a service account of this project that does not exist is refused as IAM refuses
it (400 "Service account ... does not exist."); `propagation_sets` makes a just-created account
unknown to the first N such grants, as IAM's propagation delay does.
"""

from __future__ import annotations

import base64
import http.client
import itertools
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.google_errors import google_error, service_disabled  # noqa: F401  (re-exported for tests)
from tests.rest_standin import Request, contract_violations, matching, reply_invalid, send_reply

ACT_AS = "iam.serviceAccounts.actAs"
ACCOUNT_ID = re.compile(r"[a-z][a-z0-9-]{4,28}[a-z0-9]")  # IAM's rule: 6-30 characters
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "te", "trailer", "upgrade", "host"}
_etags = itertools.count(1)


def permission_denied(permission: str, resource: str) -> tuple[int, dict]:
    """403 as these APIs answer a caller without `permission` on `resource`."""
    details = [
        {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "IAM_PERMISSION_DENIED",
            "domain": "iam.googleapis.com",
            "metadata": {"permission": permission, "resource": resource},
        }
    ]
    return 403, google_error(
        403,
        "PERMISSION_DENIED",
        f"Permission '{permission}' denied on resource '{resource}' (or it may not exist).",
        details,
    )


def new_etag() -> str:
    return base64.b64encode(f"BwY{next(_etags):08d}".encode()).decode()


class Policies:
    """IAM policies by resource, with Google's etag rule for setIamPolicy. Shared with the Artifact
    Registry stand-in."""

    def __init__(self) -> None:
        self.by_resource: dict[str, dict] = {}
        self.sets: list[str] = []  # the resources whose policy was written, in order

    def get(self, resource: str) -> dict:
        policy = self.by_resource.setdefault(resource, {"version": 1, "etag": new_etag()})
        return {k: v for k, v in policy.items() if k != "bindings" or v}

    def seed(self, resource: str, bindings: list[dict], version: int = 1) -> None:
        self.by_resource[resource] = {"version": version, "bindings": bindings, "etag": new_etag()}

    def bindings(self, resource: str) -> list[dict]:
        return self.by_resource.get(resource, {}).get("bindings", [])

    def members(self, resource: str, role: str) -> set[str]:
        return {
            m for b in self.bindings(resource) if b["role"] == role and not b.get("condition") for m in b["members"]
        }

    def set(self, resource: str, policy: dict, *, stale: tuple[int, dict]) -> tuple[int, dict]:
        current = self.get(resource)
        if policy.get("etag") and policy["etag"] != current["etag"]:
            return stale
        stored = {"version": policy.get("version", 1), "bindings": policy.get("bindings", []), "etag": new_etag()}
        if any(b.get("condition") for b in stored["bindings"]) and stored["version"] < 3:
            return 400, google_error(400, "INVALID_ARGUMENT", "Conditional bindings need policy version 3.")
        self.by_resource[resource] = stored
        self.sets.append(resource)
        return 200, self.get(resource)


def _aborted() -> tuple[int, dict]:
    return 409, google_error(
        409,
        "ABORTED",
        "There were concurrent policy changes. Please retry the whole read-modify-write with exponential backoff.",
    )


def _gcs_error(code: int, message: str, reason: str) -> dict:
    return {
        "error": {
            "code": code,
            "message": message,
            "errors": [{"message": message, "domain": "global", "reason": reason}],
        }
    }


class IamStandIn:
    """`url` is the endpoint for NEWSCLF_IAM/RESOURCEMANAGER/SECRETMANAGER_API_ENDPOINT (and, with
    `storage_upstream`, for STORAGE_EMULATOR_HOST); `accounts`, `policies`, `secrets` hold the state."""

    def __init__(
        self, *, project: str = "test-project", storage_upstream: str | None = None, propagation_sets: int = 0
    ) -> None:
        self.project = project
        self.upstream = urlsplit(storage_upstream) if storage_upstream else None
        self.propagation_sets = propagation_sets
        self.requests: list[Request] = []
        self.accounts: dict[str, dict] = {}  # email -> ServiceAccount JSON
        self.unpropagated: dict[str, int] = {}  # email -> grants still refused
        self.policies = Policies()
        self.secrets: set[str] = set()  # projects/P/secrets/NAME
        self.caller_permissions = {ACT_AS}  # what testIamPermissions grants the caller on any account
        self.after_get: Callable[[str], None] | None = None  # runs after a policy read: someone else's change
        self.faults: list[tuple[str, str, tuple[int, dict], list[int]]] = []
        self.lock = threading.RLock()
        # the project policy as Google makes it: an owner, and Compute Engine's default account as editor
        self.policies.seed(
            f"projects/{project}",
            [
                {"role": "roles/owner", "members": ["user:owner@example.com"]},
                {
                    "role": "roles/editor",
                    "members": ["serviceAccount:123456789012-compute@developer.gserviceaccount.com"],
                },
            ],
        )
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                standin._dispatch(self)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    # --- test helpers -----------------------------------------------------------------------------

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def fail(self, method: str, path: str, answer: tuple[int, dict], *, times: int = 1) -> None:
        """The next `times` requests of `method` whose path matches the regex `path` get `answer`."""
        self.faults.append((method, path, answer, [times]))

    def add_account(self, email: str) -> None:
        self.accounts[email] = self._account(email, {"displayName": "made by hand"})

    def add_secret(self, project: str, name: str) -> str:
        resource = f"projects/{project}/secrets/{name}"
        self.secrets.add(resource)
        return resource

    def calls(self, method: str | None = None, path: str = "") -> list[Request]:
        with self.lock:
            return matching(self.requests, method, path)

    def policy_sets(self) -> list[Request]:
        """Every request that wrote an IAM policy (setIamPolicy, or Cloud Storage's PUT .../iam)."""
        return self.calls("POST", ":setIamPolicy$") + self.calls("PUT", r"^/storage/v1/b/[^/]+/iam$")

    # --- HTTP -------------------------------------------------------------------------------------

    def _dispatch(self, h: BaseHTTPRequestHandler) -> None:
        split = urlsplit(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        path = unquote(split.path)
        if (
            self.upstream is not None
            and re.match(r"/(storage|upload|download)/", path)
            and not re.fullmatch(r"/storage/v1/b/[^/]+/iam", path)
        ):
            return self._forward(h, raw)
        import json

        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        req = Request(h.command, path, {k: v[-1] for k, v in parse_qs(split.query).items()}, body)
        with self.lock:
            self.requests.append(req)
            api = self._api(path)
            errors = contract_violations(api, req) if api else [f"the stand-in serves no API at {path}"]
            if errors:
                return reply_invalid(h, errors)
            try:
                code, payload = self._route(req)
            except Exception as e:  # a bug in the stand-in: make it visible in the test
                code, payload = 500, google_error(500, "INTERNAL", f"stand-in error: {type(e).__name__}: {e}")
        send_reply(h, code, payload)

    @staticmethod
    def _api(path: str) -> str | None:
        if path.startswith("/storage/v1/"):
            return "storage.v1"
        if path.startswith("/v3/projects/"):
            return "cloudresourcemanager.v3"
        if re.match(r"/v1/projects/[^/]+/secrets(/|$)", path):
            return "secretmanager.v1"
        if re.match(r"/v1/projects/[^/]+/serviceAccounts(/|$)", path):
            return "iam.v1"
        return None

    def _route(self, req: Request) -> tuple[int, Any]:
        method, path, body = req.method, req.path, req.body or {}
        for f_method, f_path, answer, left in self.faults:
            if left[0] > 0 and f_method == method and re.search(f_path, path):
                left[0] -= 1
                return answer
        m = re.fullmatch(r"/v1/projects/([^/]+)/serviceAccounts", path)
        if m and method == "POST":
            return self._create(m.group(1), body)
        m = re.fullmatch(r"/v1/projects/[^/]+/serviceAccounts/([^/:]+)(:testIamPermissions)?", path)
        if m:
            account = self.accounts.get(m.group(1))
            if account is None:
                return 404, google_error(404, "NOT_FOUND", f"Unknown service account {m.group(1)}")
            if m.group(2):
                granted = [p for p in body.get("permissions", []) if p in self.caller_permissions]
                return 200, {"permissions": granted} if granted else {}
            return 200, account
        m = re.fullmatch(r"/v3/(projects/[^/:]+):(getIamPolicy|setIamPolicy)", path)
        if m:
            return self._policy(m.group(1), m.group(2), body, stale=_aborted())
        m = re.fullmatch(r"/v1/(projects/[^/]+/secrets/[^/:]+):(getIamPolicy|setIamPolicy)", path)
        if m:
            if m.group(1) not in self.secrets:
                return 404, google_error(404, "NOT_FOUND", f"Secret [{m.group(1)}] not found or has no versions.")
            return self._policy(m.group(1), m.group(2), body, stale=_aborted())
        m = re.fullmatch(r"/storage/v1/b/([^/]+)/iam", path)
        if m:
            return self._bucket_policy(m.group(1), method, body)
        return 404, google_error(404, "NOT_FOUND", f"stand-in does not serve {method} {path}")

    # --- service accounts -------------------------------------------------------------------------

    def _account(self, email: str, fields: dict) -> dict:
        project = email.split("@", 1)[1].split(".", 1)[0]
        return {
            "name": f"projects/{project}/serviceAccounts/{email}",
            "projectId": project,
            "uniqueId": "10" + "7" * 19,
            "email": email,
            "etag": "MDEwMjE5MjA=",
            "oauth2ClientId": "10" + "7" * 19,
            **fields,
        }

    def _create(self, project: str, body: dict) -> tuple[int, dict]:
        account_id = body.get("accountId", "")
        if not ACCOUNT_ID.fullmatch(account_id):
            return 400, google_error(
                400,
                "INVALID_ARGUMENT",
                "ServiceAccount.accountId: must be 6-30 characters of [a-z0-9-], starting with a letter",
            )
        email = f"{account_id}@{project}.iam.gserviceaccount.com"
        if email in self.accounts:
            return 409, google_error(
                409, "ALREADY_EXISTS", f"Service account {account_id} already exists within project projects/{project}."
            )
        self.accounts[email] = self._account(email, dict(body.get("serviceAccount") or {}))
        if self.propagation_sets:
            self.unpropagated[email] = self.propagation_sets
        return 200, self.accounts[email]

    def _unknown_member(self, policy: dict) -> str | None:
        """A service account of this project named in `policy` that a grant cannot see (yet)."""
        suffix = f"@{self.project}.iam.gserviceaccount.com"
        for b in policy.get("bindings", []):
            for m in b.get("members", []):
                email = m.split(":", 1)[1] if m.startswith("serviceAccount:") else ""
                if not email.endswith(suffix):
                    continue
                if email not in self.accounts:
                    return email
                if self.unpropagated.get(email, 0) > 0:
                    self.unpropagated[email] -= 1
                    return email
        return None

    # --- policies ---------------------------------------------------------------------------------

    def _policy(self, resource: str, verb: str, body: dict, *, stale: tuple[int, dict]) -> tuple[int, dict]:
        if verb == "getIamPolicy":
            policy = self.policies.get(resource)
            if self.after_get is not None:
                self.after_get(resource)
            return 200, policy
        policy = body.get("policy") or {}
        unknown = self._unknown_member(policy)
        if unknown:
            return 400, google_error(400, "INVALID_ARGUMENT", f"Service account {unknown} does not exist.")
        return self.policies.set(resource, policy, stale=stale)

    def _bucket_policy(self, bucket: str, method: str, body: dict) -> tuple[int, dict]:
        if not self._bucket_exists(bucket):
            return 404, _gcs_error(404, "The specified bucket does not exist.", "notFound")
        resource = f"projects/_/buckets/{bucket}"
        if resource not in self.policies.by_resource:  # what a new bucket's policy holds
            self.policies.seed(
                resource,
                [
                    {
                        "role": "roles/storage.legacyBucketOwner",
                        "members": [f"projectEditor:{self.project}", f"projectOwner:{self.project}"],
                    },
                    {"role": "roles/storage.legacyBucketReader", "members": [f"projectViewer:{self.project}"]},
                ],
            )
        if method == "GET":
            code, policy = 200, self.policies.get(resource)
            if self.after_get is not None:
                self.after_get(resource)
        else:
            if self._unknown_member(body):
                return 400, _gcs_error(400, "Invalid argument.", "invalid")
            code, policy = self.policies.set(
                resource, body, stale=(412, _gcs_error(412, "Precondition Failed", "conditionNotMet"))
            )
        if code != 200:
            return code, policy
        return 200, {"kind": "storage#policy", "resourceId": resource, **policy}

    def _bucket_exists(self, bucket: str) -> bool:
        assert self.upstream is not None
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=30)
        try:
            conn.request("GET", f"/storage/v1/b/{bucket}")
            return conn.getresponse().status == 200
        finally:
            conn.close()

    def _forward(self, h: BaseHTTPRequestHandler, raw: bytes) -> None:
        """Pass a storage request on to fake-gcs-server, unchanged but for the host in what comes back."""
        assert self.upstream is not None
        up_host = f"{self.upstream.hostname}:{self.upstream.port}"
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=120)
        try:
            headers = {k: v for k, v in h.headers.items() if k.lower() not in HOP_BY_HOP}
            headers["Host"] = up_host
            headers["Content-Length"] = str(len(raw))
            conn.request(h.command, h.path, body=raw, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        here = (h.headers.get("Host") or up_host).encode()
        if "json" in (resp.getheader("Content-Type") or ""):
            data = data.replace(up_host.encode(), here)
        h.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in HOP_BY_HOP:
                h.send_header(k, v.replace(up_host, here.decode()) if k.lower() == "location" else v)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)
