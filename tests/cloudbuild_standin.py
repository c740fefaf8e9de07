"""A local stand-in for the Cloud Build REST API (v1), driven by the real cloudbuild_v1 client.

It records every request, checks each against Cloud Build's published contract (the discovery
document `cloudbuild.v1`: unknown fields, enum values, types; plus `build_rules`) and answers what Google would reject
with 400, recording the violation in `violations` (stop() fails the test over any); it answers
`projects.builds.create` with an Operation whose metadata holds
the new build, and "builds" in a background thread: QUEUED for a moment (no log object yet), then
WORKING while it writes the build log to the GCS emulator in pieces (re-uploading the growing
object, split mid-line), then SUCCESS (results.images with digests) or FAILURE.
Errors are answered in Google's JSON error shape, so the client raises what it raises in production.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
import uuid
from datetime import UTC, datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests import google_errors
from tests.google_errors import google_error
from tests.rest_standin import Request, contract_violations, read_request, reply_invalid, send_reply

BUILD_TYPE = "type.googleapis.com/google.devtools.cloudbuild.v1.Build"
METADATA_TYPE = "type.googleapis.com/google.devtools.cloudbuild.v1.BuildOperationMetadata"


# Docker's reference grammar (distribution/reference): lower-case path components, a tag of
# [A-Za-z0-9_.-] up to 128 starting with a word character, or a digest. Cloud Build refuses a build
# whose `images` break it ("invalid build: invalid image name").
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
DOCKER_REFERENCE = re.compile(
    rf"(?:[A-Za-z0-9.-]+(?::[0-9]+)?/)?{_COMPONENT}(?:/{_COMPONENT})*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})?"
    r"(?:@sha256:[0-9a-f]{64})?"
)
BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]")
MAX_DISK_GB = 4000  # BuildOptions.diskSizeGb: "builds that request more than the maximum are rejected"


def build_rules(req: Request) -> list[str]:
    """What the discovery document states only in prose (or Docker's grammar) about a new Build."""
    if not (req.method == "POST" and req.path.endswith("/builds") and isinstance(req.body, dict)):
        return []
    body, errors = req.body, []
    steps = body.get("steps") or []
    if not steps:
        errors.append("steps: required")
    errors += [f"steps[{i}].name: required" for i, step in enumerate(steps) if not step.get("name")]
    errors += [
        f"images: invalid image name {img!r}" for img in body.get("images", []) if not DOCKER_REFERENCE.fullmatch(img)
    ]
    disk = (body.get("options") or {}).get("diskSizeGb")
    if disk is not None and str(disk).isdigit() and int(disk) > MAX_DISK_GB:
        errors.append(f"options.diskSizeGb: {disk} GB is more than the maximum, {MAX_DISK_GB} GB")
    logs = body.get("logsBucket")
    if logs is not None and not BUCKET_NAME.fullmatch(logs.removeprefix("gs://").split("/", 1)[0]):
        errors.append(f"logsBucket: {logs!r} does not name a bucket")
    return errors


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def service_disabled(project: str) -> tuple[int, dict]:
    """403 as Google answers when the Cloud Build API is not enabled in the project."""
    return google_errors.service_disabled("cloudbuild.googleapis.com", "Cloud Build API")


def permission_denied(project: str) -> tuple[int, dict]:
    """403 as Google answers a caller without cloudbuild.builds.create."""
    details = [
        {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "IAM_PERMISSION_DENIED",
            "domain": "cloudbuild.googleapis.com",
            "metadata": {"permission": "cloudbuild.builds.create", "resource": f"projects/{project}"},
        }
    ]
    return 403, google_error(403, "PERMISSION_DENIED", "The caller does not have permission", details)


def repository_missing(project: str, region: str = "europe-west1", repo: str = "newsclf") -> tuple[int, dict]:
    """404 for an image whose Artifact Registry repository does not exist."""
    msg = f'Repository "{repo}" not found: projects/{project}/locations/{region}/repositories/{repo}'
    return 404, google_error(404, "NOT_FOUND", msg)


def default_log(build_id: str, build: dict) -> list[str]:
    """Lines shaped like a real Cloud Build log, numbered so a test can tell each one apart."""
    src = build.get("source", {}).get("storageSource", {})
    images = build.get("images", [])
    lines = [
        f'starting build "{build_id}"',
        "FETCHSOURCE",
        f"Fetching storage object: gs://{src.get('bucket')}/{src.get('object')}#1",
        "BUILD",
        "Starting Step #0",
        "Step #0: Already have image (with digest): gcr.io/cloud-builders/docker",
    ]
    lines += [f"Step #0: Step {i}/12 : layer {i:02d} of the training image (ünïcode ok)" for i in range(1, 13)]
    lines += [f"Step #0: Successfully tagged {img}" for img in images]
    lines += ["Finished Step #0", "PUSH"]
    lines += [f"Pushing {img}" for img in images]
    lines += ["DONE"]
    return lines


class CloudBuildStandIn:
    """`url` is the API endpoint; `requests` the recorded calls; set `error` to answer the next
    create or list with that (status, body), `outcome` = "FAILURE" for a failing build, `log_lines` to
    choose what the build writes; with a `registry`, a successful build pushes its images to it.
    `violations`: what Google's contract rejected, one line per request."""

    def __init__(self, storage_url: str, *, build_s: float = 2.0, pieces: int = 8, registry: Any = None) -> None:
        self.storage_url = storage_url
        self.registry = registry  # an ArtifactRegistryStandIn: a successful build pushes its images there
        self.build_s = build_s
        self.pieces = pieces
        self.requests: list[dict[str, Any]] = []
        self.violations: list[str] = []
        self.builds: dict[str, dict] = {}
        self.error: tuple[int, dict] | None = None
        self.outcome = "SUCCESS"
        self.log_lines: list[str] | None = None
        self.written_logs: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._serve = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._serve.start()

    # --- the API --------------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                pass

            def _reply(self, status: int, body: dict) -> None:
                send_reply(self, status, body)

            def do_POST(self) -> None:
                self._dispatch()

            def do_GET(self) -> None:
                self._dispatch()

            def _dispatch(self) -> None:
                req = read_request(self)
                body = {} if req.body is None and req.method == "POST" else req.body
                with standin._lock:
                    standin.requests.append({"method": req.method, "path": req.path, "body": body})
                errors = contract_violations("cloudbuild.v1", req) + build_rules(req)
                if errors:
                    with standin._lock:
                        standin.violations.append(f"{req.method} {req.path}: {'; '.join(errors)}")
                    reply_invalid(self, errors)
                    return
                status, reply = standin.handle(req.method, req.path, body)
                self._reply(status, reply)

        return Handler

    def handle(self, method: str, path: str, body: dict | None) -> tuple[int, dict]:
        parts = path.strip("/").split("/")
        # GET /v1/projects/P/builds (list; `cloud setup` checks the API with it)
        if method == "GET" and parts[:2] == ["v1", "projects"] and len(parts) == 4 and parts[3] == "builds":
            if self.error is not None:
                status, reply = self.error
                self.error = None
                return status, reply
            found = [self._snapshot(b) for b in self.builds.values() if b["projectId"] == parts[2]]
            return 200, {"builds": found} if found else {}
        # POST /v1/projects/P/builds (also /v1/projects/P/locations/L/builds)
        if method == "POST" and parts[:2] == ["v1", "projects"] and parts[-1] == "builds":
            return self._create(parts[2], body or {})
        # GET /v1/projects/P/builds/ID (also .../locations/L/builds/ID)
        if method == "GET" and parts[:2] == ["v1", "projects"] and len(parts) >= 5 and parts[-2] == "builds":
            build = self.builds.get(parts[-1])
            if build is None or build["projectId"] != parts[2]:
                return 404, google_error(404, "NOT_FOUND", f"Build {parts[-1]} not found")
            return 200, self._snapshot(build)
        # GET /v1/operations/build/P/OPID
        if method == "GET" and parts[:2] == ["v1", "operations"]:
            op_name = "/".join(parts[1:])
            for build in self.builds.values():
                if build["_operation"] == op_name:
                    return 200, self._operation(build)
            return 404, google_error(404, "NOT_FOUND", f"Operation {op_name} not found")
        # POST /v1/projects/P/builds/ID:cancel
        if method == "POST" and path.endswith(":cancel"):
            build_id = parts[-1].split(":", 1)[0]
            build = self.builds.get(build_id)
            if build is None:
                return 404, google_error(404, "NOT_FOUND", f"Build {build_id} not found")
            build["status"] = "CANCELLED"
            return 200, self._snapshot(build)
        return 404, google_error(404, "NOT_FOUND", f"No such method: {method} {path}")

    def _create(self, project: str, body: dict) -> tuple[int, dict]:
        if self.error is not None:
            status, reply = self.error
            self.error = None
            return status, reply
        build_id = str(uuid.uuid4())
        build = dict(body)
        build.update(
            id=build_id,
            projectId=project,
            status="QUEUED",
            createTime=_now(),
            logUrl=f"https://console.cloud.google.com/cloud-build/builds/{build_id}?project={project}",
            _operation=f"operations/build/{project}/{uuid.uuid4().hex}",
        )
        self.builds[build_id] = build
        worker = threading.Thread(target=self._run, args=(build,), daemon=True)
        self._threads.append(worker)
        worker.start()
        return 200, self._operation(build)

    def _snapshot(self, build: dict) -> dict:
        with self._lock:
            return {k: v for k, v in build.items() if not k.startswith("_")}

    def _operation(self, build: dict) -> dict:
        snap = self._snapshot(build)
        op: dict[str, Any] = {
            "name": build["_operation"],
            "metadata": {"@type": METADATA_TYPE, "build": snap},
        }
        if snap["status"] in ("SUCCESS", "FAILURE", "CANCELLED"):
            op["done"] = True
            op["response"] = {"@type": BUILD_TYPE, **snap}
        return op

    # --- the "build" ----------------------------------------------------------------------------

    def _run(self, build: dict) -> None:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        build_id = build["id"]
        lines = self.log_lines or default_log(build_id, build)
        if self.outcome != "SUCCESS" and self.log_lines is None:
            lines = lines[:-4] + [
                'Step #0: ERROR: failed to solve: process "/bin/sh -c uv sync --frozen" did not complete successfully',
                'ERROR: build step 0 "gcr.io/cloud-builders/docker" failed: step exited with non-zero status: 1',
            ]
        self.written_logs[build_id] = lines
        text = "".join(line + "\n" for line in lines).encode()

        bucket, _, prefix = build.get("logsBucket", "").removeprefix("gs://").partition("/")
        name = f"{prefix.strip('/')}/log-{build_id}.txt" if prefix.strip("/") else f"log-{build_id}.txt"
        client = storage.Client(
            project=build["projectId"],
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": self.storage_url},
        )
        blob = client.bucket(bucket).blob(name)

        step = self.build_s / (self.pieces + 2)
        if self._stop.wait(step * 2):  # QUEUED, no log object yet: the client sees 404
            return
        with self._lock:
            build["status"] = "WORKING"
            build["startTime"] = _now()
        # cut points that fall mid-line, so the client must hold partial lines back
        cuts = [len(text) * (i + 1) // self.pieces for i in range(self.pieces)]
        for end in cuts:
            blob.upload_from_string(text[:end], content_type="text/plain")
            if self._stop.wait(step):
                return
        with self._lock:
            build["finishTime"] = _now()
            if self.outcome == "SUCCESS":
                build["status"] = "SUCCESS"
                # one docker image, many tags: every name shares the build's digest, as a push gives them
                digest = "sha256:" + hashlib.sha256(build_id.encode()).hexdigest()
                build["results"] = {"images": [{"name": img, "digest": digest} for img in build.get("images", [])]}
                for img in build.get("images", []) if self.registry is not None else ():
                    self.registry.add_image(img, digest=digest)
            else:
                build["status"] = self.outcome
                build["failureInfo"] = {
                    "type": "USER_BUILD_STEP",
                    "detail": 'Build step failure: build step 0 "gcr.io/cloud-builders/docker" failed: '
                    "step exited with non-zero status: 1",
                }
                build["statusDetail"] = "Build step failure: build step 0 failed"

    def create_bodies(self) -> list[dict]:
        return [r["body"] for r in self.requests if r["method"] == "POST" and r["path"].endswith("/builds")]

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Wait for every background build to finish writing."""
        deadline = time.time() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.time()))

    def stop(self) -> None:
        """Shut down; fails (AssertionError) if any request broke Google's contract, so no test passes
        on a request Cloud Build would refuse. A test that sends one on purpose clears `violations`."""
        self._stop.set()
        self.wait_idle()
        self.server.shutdown()
        self.server.server_close()
        if self.violations:
            raise AssertionError("requests Cloud Build would reject with 400:\n" + "\n".join(self.violations))
