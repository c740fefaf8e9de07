"""A local stand-in for the Artifact Registry REST API (v1) subset newsclf uses.

Driven by the real artifactregistry_v1 client (transport="rest"): repositories get/create and the
long-running operation a create returns (done after `op_polls` polls, 0 = at once) for `cloud setup`;
the tags and versions of docker images (`add_image()` pushes one, as a build does) for `cloud run`'s
check that its image exists. Keeps everything in memory, records every request (method, path, query,
JSON body as sent), checks each against the published contract (discovery document
`artifactregistry.v1`) and answers what Google would reject with 400, recording it in `violations`
(close() fails the test over any); injected errors come in Google's JSON error shape, so the client
raises what it raises in production.
"""

from __future__ import annotations

import hashlib
import re
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.google_errors import google_error, service_disabled  # noqa: F401  (re-exported for tests)
from tests.iam_standin import Policies
from tests.rest_standin import Request, contract_violations, matching, read_request, reply_invalid, send_reply

REPOSITORY_TYPE = "type.googleapis.com/google.devtools.artifactregistry.v1.Repository"
METADATA_TYPE = "type.googleapis.com/google.devtools.artifactregistry.v1.OperationMetadata"
# Repository.Format as the client sends it (the REST transport encodes enums as integers)
FORMATS = {0: "FORMAT_UNSPECIFIED", 1: "DOCKER", 2: "MAVEN", 3: "NPM", 5: "APT", 6: "YUM", 8: "PYTHON"}
REPO_ID = re.compile(r"[a-z]([a-z0-9-]{0,61}[a-z0-9])?")
# LOCATION-docker.pkg.dev/PROJECT/REPOSITORY/PACKAGE[:TAG][@DIGEST]; a package name may hold slashes
DOCKER_IMAGE = re.compile(
    r"(?P<location>[a-z0-9-]+)-docker\.pkg\.dev/(?P<project>[^/]+)/(?P<repo>[^/]+)/(?P<package>[^:@]+)"
    r"(?::(?P<tag>[^@]+))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?"
)


def permission_denied(permission: str, resource: str) -> tuple[int, dict]:
    """403 as Artifact Registry answers a caller without `permission` on `resource`."""
    details = [
        {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "IAM_PERMISSION_DENIED",
            "domain": "artifactregistry.googleapis.com",
            "metadata": {"permission": permission, "resource": resource},
        }
    ]
    return 403, google_error(
        403,
        "PERMISSION_DENIED",
        f"Permission '{permission}' denied on resource '{resource}' (or it may not exist).",
        details,
    )


@dataclass
class Fault:
    method: str
    path: str  # regex searched in the request path
    answer: tuple[int, dict]
    times: int = 1


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class ArtifactRegistryStandIn:
    """`url` is the API endpoint; `repositories` maps the full name to the stored Repository JSON;
    `add_repository()` seeds one, `add_image()` pushes an image; `fail()` injects an error answer;
    `violations`: what Google's contract rejected, one line per request."""

    def __init__(self, *, op_polls: int = 1) -> None:
        self.op_polls = op_polls
        self.requests: list[Request] = []
        self.repositories: dict[str, dict] = {}
        self.operations: dict[str, dict] = {}  # name -> {"polls_left", "repository"}
        self.faults: list[Fault] = []
        self.policies = Policies()  # repository IAM policies (getIamPolicy / setIamPolicy)
        self.tags: dict[str, str] = {}  # tag name -> version name
        self.versions: dict[str, dict] = {}  # version name -> Version JSON
        self.violations: list[str] = []
        self.lock = threading.RLock()
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                standin._dispatch(self)

            do_GET = do_POST = do_DELETE = do_PATCH = _handle

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)  # quick close
        self._thread.start()

    # --- test helpers -----------------------------------------------------------------------------

    def close(self) -> None:
        """Shut down; fails (AssertionError) if any request broke Google's contract, so no test passes
        on a request Artifact Registry would refuse. A test that sends one on purpose clears `violations`."""
        self.server.shutdown()
        self.server.server_close()
        if self.violations:
            raise AssertionError("requests Artifact Registry would reject with 400:\n" + "\n".join(self.violations))

    def fail(self, method: str, path: str, answer: tuple[int, dict], *, times: int = 1) -> None:
        self.faults.append(Fault(method, path, answer, times))

    def add_repository(self, project: str, location: str, repo: str, fmt: str = "DOCKER") -> dict:
        name = f"projects/{project}/locations/{location}/repositories/{repo}"
        self.repositories[name] = self._repository(name, {"format": fmt})
        return self.repositories[name]

    def add_image(self, image: str, *, digest: str | None = None) -> str:
        """Push `image` (LOCATION-docker.pkg.dev/PROJECT/REPO/PACKAGE:TAG) as a docker push does: its
        repository appears if missing, the tag moves to the version `digest` (default: from the name).
        Returns the version's name."""
        m = DOCKER_IMAGE.fullmatch(image)
        if m is None:
            raise ValueError(f"not an Artifact Registry docker image: {image}")
        repo = f"projects/{m['project']}/locations/{m['location']}/repositories/{m['repo']}"
        with self.lock:
            if repo not in self.repositories:
                self.add_repository(m["project"], m["location"], m["repo"])
            package = f"{repo}/packages/{m['package'].replace('/', '%2F')}"
            digest = digest or m["digest"] or "sha256:" + hashlib.sha256(image.encode()).hexdigest()
            version = f"{package}/versions/{digest}"
            now = _now()
            self.versions.setdefault(version, {"name": version, "createTime": now, "updateTime": now})
            if m["tag"]:
                self.tags[f"{package}/tags/{m['tag']}"] = version
        return version

    def calls(self, method: str | None = None, path: str = "") -> list[Request]:
        with self.lock:
            return matching(self.requests, method, path)

    # --- HTTP -------------------------------------------------------------------------------------

    def _dispatch(self, h: BaseHTTPRequestHandler) -> None:
        req = read_request(h)
        errors = contract_violations("artifactregistry.v1", req)
        with self.lock:
            self.requests.append(req)
            if errors:
                self.violations.append(f"{req.method} {req.path}: {'; '.join(errors)}")
                reply_invalid(h, errors)
                return
            try:
                code, payload = self._route(req.method, req.path, req.query, req.body)
            except Exception as e:  # a bug in the stand-in: make it visible in the test
                code, payload = 500, google_error(500, "INTERNAL", f"stand-in error: {type(e).__name__}: {e}")
        send_reply(h, code, payload)

    def _route(self, method: str, path: str, query: dict, body: Any) -> tuple[int, dict]:
        for fault in self.faults:
            if fault.times > 0 and fault.method == method and re.search(fault.path, path):
                fault.times -= 1
                return fault.answer
        m = re.fullmatch(r"/v1/(projects/[^/]+/locations/[^/]+/repositories/[^/:]+):(getIamPolicy|setIamPolicy)", path)
        if m:
            if m.group(1) not in self.repositories:
                return 404, google_error(404, "NOT_FOUND", "Requested entity was not found.")
            if m.group(2) == "getIamPolicy":
                return 200, self.policies.get(m.group(1))
            stale = 409, google_error(409, "ABORTED", "There were concurrent policy changes.")
            return self.policies.set(m.group(1), (body or {}).get("policy") or {}, stale=stale)
        m = re.fullmatch(r"/v1/(projects/[^/]+/locations/[^/]+)/repositories", path)
        if m and method == "POST":
            return self._create(m.group(1), query.get("repositoryId", ""), body or {})
        m = re.fullmatch(r"/v1/(projects/[^/]+/locations/[^/]+/repositories/[^/]+)", path)
        if m and method == "GET":
            repo = self.repositories.get(m.group(1))
            if repo is None:
                return 404, google_error(404, "NOT_FOUND", "Requested entity was not found.")
            return 200, repo
        m = re.fullmatch(r"/v1/(projects/[^/]+/locations/[^/]+/operations/[^/]+)", path)
        if m and method == "GET":
            return self._poll(m.group(1))
        package = r"projects/[^/]+/locations/[^/]+/repositories/[^/]+/packages/[^/]+"
        m = re.fullmatch(rf"/v1/({package})/tags/([^/]+)", path)
        if m and method == "GET":
            return self._tag(f"{m.group(1)}/tags/{m.group(2)}")
        m = re.fullmatch(rf"/v1/({package})/tags", path)
        if m and method == "GET":
            return self._list_tags(m.group(1), query.get("filter", ""))
        m = re.fullmatch(rf"/v1/({package})/versions/([^/]+)", path)
        if m and method == "GET":
            return self._version(f"{m.group(1)}/versions/{m.group(2)}", query.get("view", ""))
        return 404, google_error(404, "NOT_FOUND", f"stand-in does not serve {method} {path}")

    def _missing(self, name: str) -> tuple[int, dict] | None:
        """404 for a name under a repository that does not exist, as Artifact Registry answers it."""
        repo = "/".join(name.split("/")[:6])
        if repo not in self.repositories:
            return 404, google_error(404, "NOT_FOUND", "Requested entity was not found.")
        return None

    def _tag(self, name: str) -> tuple[int, dict]:
        version = self.tags.get(name)
        if version is None:
            return self._missing(name) or (404, google_error(404, "NOT_FOUND", f'Tag "{name}" was not found.'))
        return 200, {"name": name, "version": version}

    def _list_tags(self, package: str, filter_: str) -> tuple[int, dict]:
        # the one filter newsclf uses: version="NAME" (Artifact Registry also takes name="..." with *)
        m = re.fullmatch(r'\s*version\s*=\s*"([^"]+)"\s*', filter_) if filter_ else None
        if filter_ and m is None:
            return 400, google_error(400, "INVALID_ARGUMENT", f"invalid filter {filter_!r}")
        tags = [
            {"name": name, "version": version}
            for name, version in sorted(self.tags.items())
            if name.startswith(package + "/tags/") and (m is None or version == m.group(1))
        ]
        return self._missing(package) or (200, {"tags": tags} if tags else {})

    def _version(self, name: str, view: str) -> tuple[int, dict]:
        version = self.versions.get(name)
        if version is None:
            return self._missing(name) or (404, google_error(404, "NOT_FOUND", f'Version "{name}" was not found.'))
        out = dict(version)
        if view in ("FULL", "2"):  # VersionView.FULL, by name or (as the REST client sends it) by number
            related = [{"name": t, "version": v} for t, v in sorted(self.tags.items()) if v == name]
            if related:
                out["relatedTags"] = related
        return 200, out

    def _repository(self, name: str, body: dict) -> dict:
        fmt = body.get("format", 0)
        fmt = FORMATS.get(fmt, str(fmt)) if isinstance(fmt, int) else fmt
        now = _now()
        repo = {**body, "name": name, "format": fmt, "createTime": now, "updateTime": now}
        repo.setdefault("mode", "STANDARD_REPOSITORY")
        return repo

    def _create(self, parent: str, repo_id: str, body: dict) -> tuple[int, dict]:
        if not REPO_ID.fullmatch(repo_id):
            return 400, google_error(400, "INVALID_ARGUMENT", f"invalid repository id {repo_id!r}")
        if body.get("format") in (None, 0, "FORMAT_UNSPECIFIED"):
            return 400, google_error(400, "INVALID_ARGUMENT", "repository format must be specified")
        name = f"{parent}/repositories/{repo_id}"
        if name in self.repositories:
            return 409, google_error(409, "ALREADY_EXISTS", f"the repository already exists: {name}")
        op_name = f"{parent}/operations/{uuid.uuid4()}"
        self.operations[op_name] = {"polls_left": self.op_polls, "repository": self._repository(name, body)}
        if self.op_polls == 0:
            self._finish(op_name)
        return 200, self._operation(op_name)

    def _finish(self, op_name: str) -> None:
        op = self.operations[op_name]
        op["done"] = True
        repo = op["repository"]
        self.repositories[repo["name"]] = repo

    def _operation(self, op_name: str) -> dict:
        op = self.operations[op_name]
        out: dict[str, Any] = {"name": op_name, "metadata": {"@type": METADATA_TYPE}}
        if op.get("done"):
            out["done"] = True
            out["response"] = {"@type": REPOSITORY_TYPE, **op["repository"]}
        return out

    def _poll(self, op_name: str) -> tuple[int, dict]:
        op = self.operations.get(op_name)
        if op is None:
            return 404, google_error(404, "NOT_FOUND", f"operation {op_name} not found")
        if not op.get("done"):
            op["polls_left"] -= 1
            if op["polls_left"] <= 0:
                self._finish(op_name)
        return 200, self._operation(op_name)
