"""A stateful local stand-in for the Compute Engine REST API subset newsclf uses.

Speaks what the real compute_v1 client sends (instances insert/get/list/aggregatedList/start/stop/
delete/setMetadata/setLabels/setScheduling/setMachineType/setMachineResources/getSerialPortOutput,
disks resize, machineTypes and acceleratorTypes aggregatedList over a catalogue of real zones, zone
operations get/wait, images getFromFamily, zones get), keeps instances and operations in memory, records
every request (method, path, query, JSON body), and takes injected errors (capacity in one zone, quota,
403, API disabled). Every /compute/v1 request is first checked against compute.v1's discovery document
(tests/discovery.py); what Google would reject, or a machine type / GPU the zone lacks, is answered 400
and recorded in `violations`, which fails the test at the fixture's teardown. Operations finish after `op_polls` polls
(0: done at once); a stopped instance stays STOPPING for `stop_polls` reads before TERMINATED.
`on_start(standin, instance)` runs whenever an instance starts (the e2e test runs the real startup
script there); `shutdown()` is what the VM's `shutdown -h now` does.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.rest_standin import Request, contract_violations, matching, read_request, reply_invalid, send_reply

API = "https://www.googleapis.com/compute/v1"
CAPACITY = "ZONE_RESOURCE_POOL_EXHAUSTED"

# What the stand-in's Compute Engine offers where, after Google's "Regions and zones" and "GPU regions
# and zones" tables (abridged): europe-west1 has zones b, c, d; us-central1 a, b, c, f; GPUs sit in
# some zones only (L4 in europe-west1-b/-c, no V100 or A100 in europe-west1 at all).
REGIONS = {"europe-west1": "bcd", "europe-west4": "abc", "us-central1": "abcf"}
ZONES = tuple(f"{region}-{z}" for region, letters in REGIONS.items() for z in letters)
ACCELERATORS = {  # type -> (zones, maximumCardsPerInstance)
    "nvidia-tesla-t4": (ZONES, 4),
    "nvidia-l4": (
        (
            "europe-west1-b",
            "europe-west1-c",
            "europe-west4-a",
            "europe-west4-b",
            "europe-west4-c",
            "us-central1-a",
            "us-central1-b",
            "us-central1-c",
        ),
        8,
    ),
    "nvidia-tesla-v100": (
        (
            "europe-west4-a",
            "europe-west4-b",
            "europe-west4-c",
            "us-central1-a",
            "us-central1-b",
            "us-central1-c",
            "us-central1-f",
        ),
        8,
    ),
    "nvidia-tesla-p100": (("europe-west1-b", "europe-west1-d", "europe-west4-a", "us-central1-c", "us-central1-f"), 4),
    "nvidia-tesla-a100": (
        ("europe-west4-a", "europe-west4-b", "us-central1-a", "us-central1-b", "us-central1-c", "us-central1-f"),
        16,
    ),
    "nvidia-h100-80gb": (("europe-west4-b", "europe-west4-c", "us-central1-a", "us-central1-b", "us-central1-c"), 8),
}
MACHINE_TYPES: dict[
    str, tuple[tuple[str, ...], int, tuple[str, int] | None]
] = {  # name -> (zones, vCPUs, built-in GPUs)
    **{f"n1-standard-{n}": (ZONES, n, None) for n in (1, 2, 4, 8, 16, 32, 64, 96)},
    **{f"e2-standard-{n}": (ZONES, n, None) for n in (2, 4, 8, 16)},
    **{
        f"g2-standard-{n}": (ACCELERATORS["nvidia-l4"][0], n, ("nvidia-l4", {24: 2, 48: 4, 96: 8}.get(n, 1)))
        for n in (4, 8, 12, 16, 24, 32, 48, 96)
    },
    **{
        f"a2-highgpu-{n}g": (ACCELERATORS["nvidia-tesla-a100"][0], 12 * n, ("nvidia-tesla-a100", n))
        for n in (1, 2, 4, 8)
    },
    "a3-highgpu-8g": (ACCELERATORS["nvidia-h100-80gb"][0], 208, ("nvidia-h100-80gb", 8)),
}


@dataclass
class Fault:
    """An injected error: the first `times` requests matching method + path regex fail."""

    method: str
    path: str  # regex searched in the request path
    kind: str  # capacity | capacity_details | quota | forbidden | unavailable | service_disabled
    via: str = "http"  # http: an HTTP error; operation: the operation finishes with error.errors[]
    times: int = 1

    def response(self) -> tuple[int, dict]:
        if self.kind == "forbidden":
            return 403, _error(403, "Required 'compute.instances.create' permission", "forbidden")
        if self.kind == "service_disabled":  # what Compute answers before the API is enabled
            message = (
                "Compute Engine API has not been used in project 123456789012 before or it is disabled. Enable it "
                "by visiting https://console.developers.google.com/apis/api/compute.googleapis.com/overview?project="
                "123456789012 then retry."
            )
            body = _error(403, message, "accessNotConfigured")
            body["error"]["details"] = [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "SERVICE_DISABLED",
                    "domain": "googleapis.com",
                    "metadata": {"service": "compute.googleapis.com"},
                }
            ]
            return 403, body
        if self.kind == "quota":
            return 403, _error(
                403, "Quota 'NVIDIA_T4_GPUS' exceeded.  Limit: 0.0 in region europe-west1.", "quotaExceeded"
            )
        if self.kind == "unavailable":
            return 503, _error(503, "Internal error. Please try again.", "backendError")
        if self.kind == "capacity_details":
            return 503, _error(
                503,
                "The zone does not have enough resources available to fulfill the request.",
                "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS",
            )
        return 503, _error(503, "The zone does not have enough resources available to fulfill the request.", CAPACITY)

    def operation_errors(self) -> list[dict]:
        code = {
            "quota": "QUOTA_EXCEEDED",
            "capacity_details": "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS",
            "forbidden": "PERMISSION_DENIED",
        }.get(self.kind, CAPACITY)
        return [{"code": code, "message": f"{code}: the zone cannot take this instance now"}]


def _error(code: int, message: str, reason: str) -> dict:
    return {
        "error": {
            "code": code,
            "message": message,
            "errors": [{"message": message, "domain": "global", "reason": reason}],
        }
    }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _fingerprint() -> str:
    """What Compute Engine hands out: 8 bytes, base64 (e.g. "42WmSpB8rSM=")."""
    return base64.b64encode(uuid.uuid4().bytes[:8]).decode()


@dataclass
class Operation:
    resource: dict
    polls_left: int
    effect: Callable[[], list[dict] | None] | None = None  # returns errors, or None


@dataclass
class Instance:
    zone: str
    resource: dict
    serial: Path
    stop_reads_left: int = 0
    sandbox: Any = None  # what on_start returned (the e2e test's running startup script)
    extra: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.resource["name"]

    @property
    def status(self) -> str:
        return self.resource["status"]

    def metadata(self) -> dict[str, str]:
        return {i["key"]: i.get("value", "") for i in self.resource.get("metadata", {}).get("items", [])}


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):  # clients hang up: fine
            super().handle_error(request, client_address)


class ComputeStandIn:
    def __init__(
        self,
        workdir: Path,
        *,
        project: str = "test-project",
        zones: tuple[str, ...] = ZONES,
        op_polls: int = 1,
        stop_polls: int = 1,
        on_start: Callable[[ComputeStandIn, Instance], Any] | None = None,
        on_stop: Callable[[ComputeStandIn, Instance], None] | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.project = project
        self.zones = list(zones)
        self.op_polls = op_polls
        self.stop_polls = stop_polls
        self.on_start = on_start
        self.on_stop = on_stop
        self.requests: list[Request] = []
        self.instances: dict[tuple[str, str], Instance] = {}
        self.operations: dict[tuple[str, str], Operation] = {}
        self.faults: list[Fault] = []
        # what Google's contract (tests/discovery.py) rejected: the fixture fails the test on any
        self.violations: list[tuple[Request, list[str]]] = []
        self.secrets: dict[str, str] = {}  # Secret Manager stand-in under /_secrets
        self.images = {
            ("deeplearning-platform-release", family): {
                "kind": "compute#image",
                "name": f"{family}-{version}",
                "family": family,
                "status": "READY",
                "selfLink": f"{API}/projects/deeplearning-platform-release/global/images/{family}-{version}",
            }
            for family, version in (
                ("common-cu128-ubuntu-2204-nvidia-570", "v20250601"),
                ("common-cu129-ubuntu-2204-nvidia-580", "v20260415"),
                ("common-cu129-ubuntu-2404-nvidia-580", "v20260401"),
            )
        }
        self.lock = threading.RLock()
        self._ids = itertools.count(1000)
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                standin._dispatch(self)

            do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _handle

            def log_message(self, *args: Any) -> None:
                pass

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------------ test helpers

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def fail(self, method: str, path: str, kind: str, *, via: str = "http", times: int = 1) -> None:
        self.faults.append(Fault(method, path, kind, via, times))

    def calls(self, method: str | None = None, path: str = "") -> list[Request]:
        """Recorded requests whose method matches and whose path contains `path` (a regex)."""
        with self.lock:
            return matching(self.requests, method, path)

    def instance(self, name: str, zone: str | None = None) -> Instance | None:
        with self.lock:
            for (z, n), inst in self.instances.items():
                if n == name and (zone is None or z == zone):
                    return inst
        return None

    def append_serial(self, name: str, text: str) -> None:
        inst = self.instance(name)
        assert inst is not None, f"no instance {name}"
        with open(inst.serial, "a", encoding="utf-8") as f:
            f.write(text)

    def shutdown(self, zone: str, name: str) -> None:
        """The guest powered itself off (`shutdown -h now`): STOPPING for a read or two, then TERMINATED."""
        with self.lock:
            inst = self.instances.get((zone, name))
            if inst is None or inst.status not in ("RUNNING", "STAGING", "PROVISIONING"):
                return
            inst.resource["status"] = "STOPPING"
            inst.stop_reads_left = self.stop_polls

    def metadata_attribute(self, zone: str, name: str, key: str) -> str | None:
        with self.lock:
            inst = self.instances.get((zone, name))
            return None if inst is None else inst.metadata().get(key)

    # ------------------------------------------------------------------------------ HTTP plumbing

    def _dispatch(self, h: BaseHTTPRequestHandler) -> None:
        req = read_request(h)
        path, query, body = req.path, req.query, req.body
        with self.lock:
            self.requests.append(req)
            errors = contract_violations("compute.v1", req) if path.startswith("/compute/v1/") else []
            if errors:  # Google answers 400 before it looks at anything else
                self.violations.append((req, errors))
                reply_invalid(h, errors)
                return
            self._current = req
            try:
                if path.startswith("/_metadata/") and h.headers.get("Metadata-Flavor") != "Google":
                    code, payload = 403, "Missing Metadata-Flavor: Google header"
                else:
                    code, payload = self._route(h.command, path, query, body)
            except Exception as e:  # a bug in the stand-in: make it visible in the test
                code, payload = 500, _error(500, f"stand-in error: {type(e).__name__}: {e}", "backendError")
        send_reply(h, code, payload)  # the metadata server answers attributes as plain text

    def _invalid(self, message: str, code: int = 400, reason: str = "invalid") -> tuple[int, dict]:
        """What Google answers a request that names something it does not have: recorded as a violation."""
        self.violations.append((self._current, [message]))
        return code, _error(code, message, reason)

    def _fault(self, method: str, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.times > 0 and fault.method == method and re.search(fault.path, path):
                fault.times -= 1
                return fault
        return None

    def _route(self, method: str, path: str, query: dict, body: Any) -> tuple[int, Any]:
        # metadata server stand-in for the e2e sandbox: /_metadata/<zone>/<name>/computeMetadata/v1/...
        m = re.fullmatch(r"/_metadata/([^/]+)/([^/]+)/computeMetadata/v1/(.*)", path)
        if m:
            return self._metadata(*m.groups())
        m = re.fullmatch(r"/_secrets/v1/projects/([^/]+)/secrets/([^/]+)/versions/([^/:]+):access", path)
        if m and method == "GET":
            if m.group(2) not in self.secrets:
                return 404, _error(404, f"Secret [{m.group(2)}] not found", "notFound")
            data = base64.b64encode(self.secrets[m.group(2)].encode()).decode()
            return 200, {"name": path, "payload": {"data": data}}
        m = re.fullmatch(r"/_sandbox/([^/]+)/([^/]+)/shutdown", path)
        if m and method == "POST":
            self.shutdown(*m.groups())
            return 200, {}

        fault = self._fault(method, path)
        if fault and fault.via == "http":
            return fault.response()

        p = re.escape(self.project)
        m = re.fullmatch(rf"/compute/v1/projects/{p}/zones/([^/]+)", path)
        if m and method == "GET":  # zones.get (`cloud setup` checks the API with it)
            if m.group(1) not in self.zones:
                return 404, _error(
                    404, f"The resource 'projects/{self.project}/zones/{m.group(1)}' was not found", "notFound"
                )
            region = m.group(1).rsplit("-", 1)[0]
            return 200, {
                "kind": "compute#zone",
                "name": m.group(1),
                "status": "UP",
                "region": f"{API}/projects/{self.project}/regions/{region}",
                "selfLink": f"{API}/projects/{self.project}/zones/{m.group(1)}",
            }
        m = re.fullmatch(r"/compute/v1/projects/([^/]+)/global/images/family/([^/]+)", path)
        if m and method == "GET":
            image = self.images.get((m.group(1), m.group(2)))
            if image is None:
                return 404, _error(
                    404,
                    f"The resource 'projects/{m.group(1)}/global/images/family/{m.group(2)}' was not found",
                    "notFound",
                )
            return 200, image
        if path == f"/compute/v1/projects/{self.project}/aggregated/instances" and method == "GET":
            return 200, self._aggregated(query)
        m = re.fullmatch(rf"/compute/v1/projects/{p}/aggregated/(machineTypes|acceleratorTypes)", path)
        if m and method == "GET":
            return 200, self._catalogue(m.group(1), query)
        m = re.fullmatch(rf"/compute/v1/projects/{p}/zones/([^/]+)/disks/([^/]+)/resize", path)
        if m and method == "POST":
            return self._resize(m.group(1), m.group(2), body, fault)
        m = re.fullmatch(rf"/compute/v1/projects/{p}/zones/([^/]+)/operations/([^/]+)(/wait)?", path)
        if m:
            return self._poll_operation(m.group(1), m.group(2))
        m = re.fullmatch(rf"/compute/v1/projects/{p}/zones/([^/]+)/instances", path)
        if m and method == "GET":
            items = [i.resource for (z, _), i in sorted(self.instances.items()) if z == m.group(1)]
            return 200, {
                "kind": "compute#instanceList",
                "items": [r for r in items if _matches(r, query.get("filter"))],
            }
        if m and method == "POST":
            return self._insert(m.group(1), body, fault)
        m = re.fullmatch(rf"/compute/v1/projects/{p}/zones/([^/]+)/instances/([^/]+)(?:/([A-Za-z]+))?", path)
        if m:
            zone, name, verb = m.groups()
            inst = self.instances.get((zone, name))
            if inst is None:
                return 404, _error(
                    404,
                    f"The resource 'projects/{self.project}/zones/{zone}/instances/{name}' was not found",
                    "notFound",
                )
            return self._instance_call(method, inst, verb, query, body, fault)
        return 404, _error(404, f"stand-in does not serve {method} {path}", "notFound")

    # ------------------------------------------------------------------------------ operations

    def _operation(
        self,
        zone: str,
        kind: str,
        target: str,
        effect: Callable[[], list[dict] | None] | None,
        fault: Fault | None = None,
    ) -> tuple[int, dict]:
        name = f"operation-{next(self._ids)}-{uuid.uuid4().hex[:8]}"
        resource = {
            "kind": "compute#operation",
            "id": str(next(self._ids)),
            "name": name,
            "zone": f"{API}/projects/{self.project}/zones/{zone}",
            "operationType": kind,
            "targetLink": f"{API}/projects/{self.project}/zones/{zone}/instances/{target}",
            "status": "RUNNING",
            "progress": 0,
            "insertTime": _now(),
            "selfLink": f"{API}/projects/{self.project}/zones/{zone}/operations/{name}",
        }
        if fault is not None and fault.via == "operation":
            errors = fault.operation_errors()
            effect = lambda: errors  # noqa: E731
        op = Operation(resource, self.op_polls, effect)
        self.operations[(zone, name)] = op
        if op.polls_left == 0:
            self._finish(op)
        return 200, dict(resource)

    def _finish(self, op: Operation) -> None:
        errors = op.effect() if op.effect else None
        op.resource.update(status="DONE", progress=100, endTime=_now())
        if errors:
            op.resource["error"] = {"errors": errors}
            op.resource["httpErrorStatusCode"] = 503

    def _poll_operation(self, zone: str, name: str) -> tuple[int, dict]:
        op = self.operations.get((zone, name))
        if op is None:
            return 404, _error(404, f"The resource 'operations/{name}' was not found", "notFound")
        if op.resource["status"] != "DONE":
            op.polls_left -= 1
            if op.polls_left <= 0:
                self._finish(op)
        return 200, dict(op.resource)

    # ------------------------------------------------------------------------------ instances

    def _hardware_errors(self, zone: str, machine_type: str, accels: list[dict]) -> str | None:
        """What Compute Engine says when the zone lacks the machine type or GPU, or they do not go together."""
        offered = MACHINE_TYPES.get(machine_type)
        if offered is None or zone not in offered[0]:
            return (
                f"Invalid value for field 'resource.machineType': 'zones/{zone}/machineTypes/{machine_type}'. "
                f"Machine type with name '{machine_type}' does not exist in zone '{zone}'."
            )
        for i, acc in enumerate(accels):
            kind = acc.get("acceleratorType", "").rsplit("/", 1)[-1]
            zones, most = ACCELERATORS.get(kind, ((), 0))
            if zone not in zones:
                return (
                    f"Invalid value for field 'resource.guestAccelerators[{i}].acceleratorType': "
                    f"'{acc.get('acceleratorType')}'. Accelerator type '{kind}' does not exist in zone '{zone}'."
                )
            if offered[2] is not None or not machine_type.startswith("n1-"):
                return (
                    f"Invalid value for field 'resource.guestAccelerators[{i}]': {machine_type} does not take "
                    "attached accelerators."
                )
            if acc.get("acceleratorCount", 0) > most:
                return f"Invalid value for field 'resource.guestAccelerators[{i}].acceleratorCount': at most {most}."
        return None

    def _insert(self, zone: str, body: dict, fault: Fault | None) -> tuple[int, dict]:
        name = body.get("name", "")
        if zone not in self.zones:
            return self._invalid(f"Invalid value for field 'zone': '{zone}'. Unknown zone.")
        problem = self._hardware_errors(
            zone, body.get("machineType", "").rsplit("/", 1)[-1], body.get("guestAccelerators") or []
        )
        if problem:
            return self._invalid(problem)
        if (zone, name) in self.instances:
            return 409, _error(
                409,
                f"The resource 'projects/{self.project}/zones/{zone}/instances/{name}' already exists",
                "alreadyExists",
            )
        if not body.get("machineType"):
            return 400, _error(400, "Invalid value for field 'resource.machineType': ''", "invalid")
        boot = [d for d in body.get("disks", []) if d.get("boot")]
        if not boot or not boot[0].get("initializeParams", {}).get("sourceImage"):
            return 400, _error(
                400, "Invalid value for field 'resource.disks': a boot disk with a sourceImage is required", "invalid"
            )
        scheduling = body.get("scheduling", {})
        if body.get("guestAcceleratorTypes") or body.get("guestAccelerators"):
            if scheduling.get("onHostMaintenance") != "TERMINATE":
                return 400, _error(400, "Instances with guest accelerators do not support live migration.", "invalid")
        if scheduling.get("provisioningModel") == "SPOT" and scheduling.get("onHostMaintenance") != "TERMINATE":
            return 400, _error(400, "Spot VMs must have onHostMaintenance set to TERMINATE.", "invalid")
        if scheduling.get("provisioningModel") == "SPOT" and scheduling.get("automaticRestart", True):
            return 400, _error(
                400,
                "Invalid value for field 'resource.scheduling.automaticRestart': 'true'. Spot VMs cannot restart automatically.",
                "invalid",
            )
        if "maxRunDuration" in scheduling and not scheduling.get("instanceTerminationAction"):
            return 400, _error(400, "instanceTerminationAction is required with maxRunDuration", "invalid")

        def effect() -> None:
            resource = json.loads(json.dumps(body))
            base = f"{API}/projects/{self.project}/zones/{zone}"
            resource.update(
                kind="compute#instance",
                id=str(next(self._ids)),
                zone=base,
                selfLink=f"{base}/instances/{name}",
                status="RUNNING",
                creationTimestamp=_now(),
                lastStartTimestamp=_now(),
                labelFingerprint=_fingerprint(),
                machineType=_full(base, resource["machineType"]),
            )
            resource.setdefault("metadata", {})["fingerprint"] = _fingerprint()
            for acc in resource.get("guestAccelerators", []):
                acc["acceleratorType"] = _full(base, acc["acceleratorType"])
            for i, disk in enumerate(resource.get("disks", [])):
                params = disk.pop("initializeParams", {})
                disk.update(
                    diskSizeGb=str(params.get("diskSizeGb", "10")),
                    type="PERSISTENT",
                    mode="READ_WRITE",
                    deviceName=disk.get("deviceName", f"persistent-disk-{i}"),
                    source=f"{base}/disks/{params.get('diskName') or (name if i == 0 else f'{name}-{i}')}",
                )
            serial = self.workdir / f"serial-{zone}-{name}.log"
            serial.touch()
            inst = Instance(zone, resource, serial)
            self.instances[(zone, name)] = inst
            self._started(inst)

        return self._operation(zone, "insert", name, effect, fault)

    def _started(self, inst: Instance) -> None:
        if self.on_start is not None:
            inst.sandbox = self.on_start(self, inst)

    def _instance_call(
        self, method: str, inst: Instance, verb: str | None, query: dict, body: Any, fault: Fault | None
    ) -> tuple[int, Any]:
        zone, name = inst.zone, inst.name
        if verb is None and method == "GET":
            if inst.status == "STOPPING":
                if inst.stop_reads_left <= 0:
                    inst.resource["status"] = "TERMINATED"
                    inst.resource["lastStopTimestamp"] = _now()
                inst.stop_reads_left -= 1
            return 200, inst.resource
        if verb is None and method == "DELETE":

            def effect() -> None:
                self._kill(inst)
                self.instances.pop((zone, name), None)

            return self._operation(zone, "delete", name, effect, fault)
        if verb == "serialPort" and method == "GET":
            start = int(query.get("start", "0") or 0)
            data = inst.serial.read_bytes()
            start = min(start, len(data))
            return 200, {
                "kind": "compute#serialPortOutput",
                "contents": data[start:].decode("utf-8", "replace"),
                "start": str(start),
                "next": str(len(data)),
                "selfLink": inst.resource["selfLink"],
            }
        if method != "POST":
            return 405, _error(405, f"{method} not allowed", "methodNotAllowed")
        if verb == "start":
            if inst.status == "RUNNING":
                return self._operation(zone, "start", name, None, fault)
            if inst.status != "TERMINATED":
                return 400, _error(400, f"The resource '{name}' is not ready", "resourceNotReady")

            def effect() -> None:
                inst.resource.update(status="RUNNING", lastStartTimestamp=_now())
                self._started(inst)

            return self._operation(zone, "start", name, effect, fault)
        if verb == "stop":

            def effect() -> None:
                if inst.status in ("RUNNING", "STAGING", "PROVISIONING"):
                    inst.resource["status"] = "STOPPING"
                    inst.stop_reads_left = self.stop_polls
                    self._kill(inst)

            return self._operation(zone, "stop", name, effect, fault)
        if verb == "setMetadata":
            if (body or {}).get("fingerprint") != inst.resource["metadata"]["fingerprint"]:
                return 412, _error(
                    412, "Supplied fingerprint does not match current metadata fingerprint.", "conditionNotMet"
                )

            def effect() -> None:
                inst.resource["metadata"] = {**body, "fingerprint": _fingerprint(), "kind": "compute#metadata"}

            return self._operation(zone, "setMetadata", name, effect, fault)
        if verb == "setLabels":
            if (body or {}).get("labelFingerprint") != inst.resource["labelFingerprint"]:
                return 412, _error(
                    412, "Labels fingerprint either invalid or resource labels have changed", "conditionNotMet"
                )

            def effect() -> None:
                inst.resource.update(labels=body.get("labels", {}), labelFingerprint=_fingerprint())

            return self._operation(zone, "setLabels", name, effect, fault)
        if verb == "setScheduling":
            if inst.resource.get("guestAccelerators") and body.get("onHostMaintenance") != "TERMINATE":
                return self._invalid("Instances with guest accelerators do not support live migration.")

            def effect() -> None:
                inst.resource["scheduling"] = body  # the whole Scheduling is replaced

            return self._operation(zone, "setScheduling", name, effect, fault)
        if verb == "setServiceAccount":
            if inst.status != "TERMINATED":
                return self._invalid(f"The resource '{name}' must be stopped for {verb}.", reason="resourceNotReady")

            def effect() -> None:
                inst.resource["serviceAccounts"] = [{"email": body.get("email"), "scopes": body.get("scopes", [])}]

            return self._operation(zone, verb, name, effect, fault)
        if verb in ("setMachineType", "setMachineResources"):
            if inst.status != "TERMINATED":
                return self._invalid(f"The resource '{name}' must be stopped for {verb}.", reason="resourceNotReady")
            machine_type = (body.get("machineType") or inst.resource["machineType"]).rsplit("/", 1)[-1]
            accels = (
                body.get("guestAccelerators", [])
                if verb == "setMachineResources"
                else (inst.resource.get("guestAccelerators") or [])
            )
            problem = self._hardware_errors(zone, machine_type, accels)
            if problem:
                return self._invalid(problem)
            if accels and inst.resource.get("scheduling", {}).get("onHostMaintenance") != "TERMINATE":
                return self._invalid("Instances with guest accelerators do not support live migration.")

            def effect() -> None:
                if verb == "setMachineType":
                    inst.resource["machineType"] = _full(inst.resource["zone"], body["machineType"])
                else:
                    inst.resource["guestAccelerators"] = [
                        {**a, "acceleratorType": _full(inst.resource["zone"], a["acceleratorType"])} for a in accels
                    ]

            return self._operation(zone, verb, name, effect, fault)
        return 404, _error(404, f"stand-in does not serve instances/{verb}", "notFound")

    def _resize(self, zone: str, disk: str, body: dict, fault: Fault | None) -> tuple[int, dict]:
        url = f"{API}/projects/{self.project}/zones/{zone}/disks/{disk}"
        attached = [d for i in self.instances.values() for d in i.resource.get("disks", []) if d.get("source") == url]
        if not attached:
            return 404, _error(
                404, f"The resource 'projects/{self.project}/zones/{zone}/disks/{disk}' was not found", "notFound"
            )
        size = int(body["sizeGb"])
        if size < int(attached[0]["diskSizeGb"]):
            return self._invalid(
                f"Invalid value for field 'sizeGb': '{size}'. New disk size '{size}' GiB must be larger than existing "
                f"size '{attached[0]['diskSizeGb']}' GiB."
            )

        def effect() -> None:
            attached[0]["diskSizeGb"] = str(size)

        return self._operation(zone, "resizeDisk", disk, effect, fault)

    def _catalogue(self, kind: str, query: dict) -> dict:
        """machineTypes / acceleratorTypes aggregatedList: every zone a scope, empty ones with a warning."""
        m = re.fullmatch(r'\s*name\s*=\s*"?([^"]*)"?\s*', query.get("filter", ""))
        wanted = m.group(1) if m else None
        items: dict[str, dict] = {}
        for zone in self.zones:
            found = []
            if kind == "machineTypes":
                for name, (zones, cpus, gpu) in MACHINE_TYPES.items():
                    if zone in zones and wanted in (None, name):
                        mt = {
                            "kind": "compute#machineType",
                            "name": name,
                            "zone": zone,
                            "guestCpus": cpus,
                            "selfLink": f"{API}/projects/{self.project}/zones/{zone}/machineTypes/{name}",
                        }
                        if gpu:
                            mt["accelerators"] = [{"guestAcceleratorType": gpu[0], "guestAcceleratorCount": gpu[1]}]
                        found.append(mt)
            else:
                for name, (zones, most) in ACCELERATORS.items():
                    if zone in zones and wanted in (None, name):
                        found.append(
                            {
                                "kind": "compute#acceleratorType",
                                "name": name,
                                "maximumCardsPerInstance": most,
                                "zone": f"{API}/projects/{self.project}/zones/{zone}",
                                "selfLink": f"{API}/projects/{self.project}/zones/{zone}/acceleratorTypes/{name}",
                            }
                        )
            items[f"zones/{zone}"] = (
                {kind: found}
                if found
                else {
                    "warning": {
                        "code": "NO_RESULTS_ON_PAGE",
                        "message": f"There are no results for scope 'zones/{zone}' on this page.",
                    }
                }
            )
        return {"kind": f"compute#{kind[:-1]}AggregatedList", "items": items}

    def _kill(self, inst: Instance) -> None:
        if self.on_stop is not None:
            self.on_stop(self, inst)

    def _aggregated(self, query: dict) -> dict:
        items: dict[str, dict] = {}
        zones = sorted(set(self.zones) | {z for z, _ in self.instances})
        for zone in zones:
            found = [i.resource for (z, _), i in sorted(self.instances.items()) if z == zone]
            found = [r for r in found if _matches(r, query.get("filter"))]
            if found:
                items[f"zones/{zone}"] = {"instances": found}
            else:
                items[f"zones/{zone}"] = {
                    "warning": {
                        "code": "NO_RESULTS_ON_PAGE",
                        "message": "There are no results for scope 'zones/{zone}' on this page.",
                    }
                }
        return {"kind": "compute#instanceAggregatedList", "items": items}

    # ------------------------------------------------------------------------------ metadata server

    def _metadata(self, zone: str, name: str, rest: str) -> tuple[int, Any]:
        inst = self.instances.get((zone, name))
        if inst is None:
            return 404, "not found"
        if rest == "instance/service-accounts/default/token":
            return 200, {"access_token": "ya29.standin-token-SECRET", "expires_in": 3599, "token_type": "Bearer"}
        if rest == "project/project-id":
            return 200, self.project
        if rest.startswith("instance/attributes/"):
            value = inst.metadata().get(rest[len("instance/attributes/") :])
            return (404, "not found") if value is None else (200, value)
        return 404, "not found"


def _full(base: str, value: str) -> str:
    """Relative `zones/Z/...` names come back as full URLs, as from the real API."""
    if value.startswith("http"):
        return value
    return f"{API}/projects/{base.split('/projects/')[1].split('/')[0]}/{value}"


def _matches(resource: dict, flt: str | None) -> bool:
    """The filter forms newsclf sends: `labels.KEY:*`, `labels.KEY = "V"`, `name = "N"`."""
    if not flt:
        return True
    m = re.fullmatch(r"\s*labels\.([\w-]+)\s*:\s*\*\s*", flt)
    if m:
        return m.group(1) in resource.get("labels", {})
    m = re.fullmatch(r'\s*labels\.([\w-]+)\s*=\s*"([^"]*)"\s*', flt)
    if m:
        return resource.get("labels", {}).get(m.group(1)) == m.group(2)
    m = re.fullmatch(r'\s*name\s*=\s*"([^"]*)"\s*', flt)
    if m:
        return resource.get("name") == m.group(1)
    raise ValueError(f"stand-in cannot parse filter {flt!r}")


# ------------------------------------------------------------------------------------------ VM sandbox

DOCKER_SHIM = r'''#!{python}
"""`docker` on the sandboxed VM: login checks the password on stdin, pull is a no-op, run runs the job."""
import json, os, subprocess, sys

calls = os.environ["NEWSCLF_SANDBOX_CALLS"]
argv = sys.argv[1:]
record = {"argv": argv}
if argv[:1] == ["login"]:
    record["password_from_stdin"] = sys.stdin.read().strip()
if argv[:1] != ["run"]:
    with open(calls, "a") as f:
        f.write(json.dumps(record) + "\n")
    sys.exit(0)

VALUE_OPTS = {"--name", "--network", "--ipc", "--gpus", "--env-file", "-e", "--env", "-v", "--volume", "--shm-size", "-w"}
env = {}
i, args = 1, argv
while i < len(args) and args[i].startswith("-"):
    opt = args[i]
    if "=" in opt:
        opt, _, value = opt.partition("=")
        i += 1
    elif opt in VALUE_OPTS:
        value = args[i + 1]
        i += 2
    else:
        value = None
        i += 1
    if opt == "--env-file":
        with open(value) as f:
            record["env_file"] = f.read()
        for line in record["env_file"].splitlines():
            if "=" in line:
                k, _, v = line.partition("=")
                env[k] = v
    elif opt in ("-e", "--env"):
        k, _, v = value.partition("=")
        env[k] = v
image, job_args = args[i], args[i + 1:]
record["image"], record["job_args"] = image, job_args
with open(calls, "a") as f:
    f.write(json.dumps(record) + "\n")

# a container sees its image's environment and the env file, not the VM's: drop the sandbox's variables
keep = {k: v for k, v in os.environ.items() if not k.startswith("NEWSCLF_") or k == "NEWSCLF_GCP_PROJECT"}
full_env = {**keep, **env}
if image.endswith(":crash"):  # a container that dies without writing status.json
    print("Traceback (most recent call last):\nRuntimeError: the container crashed", flush=True)
    sys.exit(3)
if image.endswith(":fake"):  # a quick stand-in for `newsclf job`
    cmd = [sys.executable, os.environ["NEWSCLF_SANDBOX_FAKE_JOB"], *job_args]
else:
    cmd = [os.environ["NEWSCLF_SANDBOX_PYTHON"], "-m", "newsclf", "job", *job_args]
os.makedirs(os.environ["NEWSCLF_SANDBOX_JOB_CWD"], exist_ok=True)
sys.exit(subprocess.call(cmd, env=full_env, cwd=os.environ["NEWSCLF_SANDBOX_JOB_CWD"]))
'''

SHUTDOWN_SHIM = r"""#!/usr/bin/env bash
# `shutdown -h now` on the sandboxed VM: tell the stand-in the guest powered off
printf '%s\n' "$*" >>"$NEWSCLF_SANDBOX_DIR/shutdown-calls"
curl -fsS -X POST "$NEWSCLF_SANDBOX_SHUTDOWN_URL" >/dev/null
"""

NVIDIA_SMI_SHIM = """#!/usr/bin/env bash
if [[ "$*" == *--query-gpu=driver_version* ]]; then echo "$NEWSCLF_SANDBOX_DRIVER"; fi
exit 0
"""

NVIDIA_CTK_SHIM = """#!/usr/bin/env bash
# the NVIDIA Container Toolkit's CLI, as on a VM image that ships the toolkit
printf '%s\\n' "$*" >>"$NEWSCLF_SANDBOX_DIR/nvidia-ctk-calls"
"""

FAKE_JOB = r'''#!{python}
"""A quick stand-in for `newsclf job`: status running, a few lines, metrics, status succeeded (or failed)."""
import argparse, json, os, sys, time
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

p = argparse.ArgumentParser()
p.add_argument("--bucket"); p.add_argument("--run-id"); p.add_argument("--fail", action="store_true")
# how long the job runs, in seconds: a real train option, since `cloud run` refuses any other
p.add_argument("--patience", dest="sleep", type=float, default=0.0)
a, rest = p.parse_known_args()
bucket = storage.Client(project="test-project", credentials=AnonymousCredentials()).bucket(a.bucket)
def put(name, doc):
    bucket.blob(f"runs/{a.run_id}/{name}").upload_from_string(json.dumps(doc), content_type="application/json")
put("status.json", {"state": "running", "exit_code": None, "started_at": "2026-01-01T00:00:00Z", "finished_at": None, "error": None})
print(f"fake job: run {a.run_id} args {rest}")
print("wandb key present:", bool(os.environ.get("WANDB_API_KEY")))
print("progress 50%\rprogress 100%")
sys.stdout.flush()
time.sleep(a.sleep)
if a.fail:
    print("fake job: failing", flush=True)
    put("status.json", {"state": "failed", "exit_code": 2, "started_at": "2026-01-01T00:00:00Z", "finished_at": "2026-01-01T00:01:00Z", "error": "fake failure"})
    sys.exit(2)
put("metrics.json", {"run_id": a.run_id, "test": {"accuracy": 0.9, "macro_f1": 0.89, "precision": 0.9, "recall": 0.88, "loss": 0.3}})
put("status.json", {"state": "succeeded", "exit_code": 0, "started_at": "2026-01-01T00:00:00Z", "finished_at": "2026-01-01T00:01:00Z", "error": None})
print("fake job: done", flush=True)
'''


class VMSandbox:
    """What a started instance does in the e2e tests: the real startup script from its metadata, run by
    bash with PATH shims for `docker`, `shutdown`, `nvidia-smi` and `nvidia-ctk`, the stand-in as metadata
    server and Secret Manager, a file as /dev/ttyS0 (the stand-in serves it as serial port 1), and Cloud Storage
    at STORAGE_EMULATOR_HOST. Use `on_start` / `on_stop` as the stand-in's hooks."""

    def __init__(self, workdir: Path, storage_url: str, *, python: str | None = None) -> None:
        import os
        import sys

        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.storage_url = storage_url
        self.python = python or sys.executable
        self.bin = self.dir / "bin"
        self.bin.mkdir(exist_ok=True)
        self.calls = self.dir / "docker-calls.jsonl"
        self.fake_job = self.dir / "fake_job.py"
        self.fake_job.write_text(FAKE_JOB.replace("{python}", self.python))
        for name, text in (
            ("docker", DOCKER_SHIM.replace("{python}", self.python)),
            ("shutdown", SHUTDOWN_SHIM),
            ("nvidia-smi", NVIDIA_SMI_SHIM),
            ("nvidia-ctk", NVIDIA_CTK_SHIM),
        ):
            path = self.bin / name
            path.write_text(text)
            path.chmod(0o755)
        self.procs: list[Any] = []
        self._boots = itertools.count(1)
        self._base_path = os.environ.get("PATH", "/usr/bin:/bin")
        self.driver = "580.95.05"  # what the nvidia-smi shim reports

    def env(self, standin: ComputeStandIn, inst: Instance) -> dict[str, str]:
        import os

        vm_dir = self.dir / f"vm-{inst.zone}-{inst.name}"
        return {
            "PATH": f"{self.bin}:{self._base_path}",
            "HOME": str(self.dir),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "NEWSCLF_METADATA_URL": f"{standin.url}/_metadata/{inst.zone}/{inst.name}/computeMetadata/v1",
            "NEWSCLF_SERIAL_DEVICE": str(inst.serial),
            "NEWSCLF_WORKDIR": str(vm_dir / "var-lib-newsclf"),  # survives reboots, like the boot disk
            "NEWSCLF_SECRETMANAGER_URL": f"{standin.url}/_secrets",
            "STORAGE_EMULATOR_HOST": self.storage_url,
            "NEWSCLF_SANDBOX_DIR": str(self.dir),
            "NEWSCLF_SANDBOX_CALLS": str(self.calls),
            "NEWSCLF_SANDBOX_SHUTDOWN_URL": f"{standin.url}/_sandbox/{inst.zone}/{inst.name}/shutdown",
            "NEWSCLF_SANDBOX_PYTHON": self.python,
            "NEWSCLF_SANDBOX_FAKE_JOB": str(self.fake_job),
            "NEWSCLF_SANDBOX_JOB_CWD": str(vm_dir / "job"),
            "NEWSCLF_SANDBOX_DRIVER": self.driver,
            "NEWSCLF_GCP_PROJECT": standin.project,
            "WANDB_MODE": "disabled",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
        }

    def on_start(self, standin: ComputeStandIn, inst: Instance) -> Any:
        import subprocess

        boot = next(self._boots)
        script = self.dir / f"startup-{inst.name}-{boot}.sh"
        script.write_text(inst.metadata()["startup-script"])
        out = open(self.dir / f"startup-{inst.name}-{boot}.out", "wb")
        proc = subprocess.Popen(
            ["bash", str(script)],
            env=self.env(standin, inst),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def on_stop(self, standin: ComputeStandIn, inst: Instance) -> None:
        """The VM is stopping: SIGTERM everything the startup script started (from a thread: the
        script still talks to the stand-in while it winds down)."""
        proc = inst.sandbox
        if proc is None or proc.poll() is not None:
            return

        def kill() -> None:
            import os
            import signal
            import subprocess

            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=20)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)

        threading.Thread(target=kill, daemon=True).start()

    def docker_calls(self) -> list[dict]:
        if not self.calls.exists():
            return []
        return [json.loads(line) for line in self.calls.read_text().splitlines() if line.strip()]

    def wait_all(self, timeout: float = 60) -> None:
        for proc in self.procs:
            proc.wait(timeout=timeout)

    def close(self) -> None:
        import os
        import signal

        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=10)


# ------------------------------------------------------------------------------------------ fixtures
# (imported by tests/test_compute.py and tests/test_cloud_e2e.py)


@pytest.fixture
def standin(gcs, tmp_path, monkeypatch):
    """The Compute stand-in, NEWSCLF_COMPUTE_API_ENDPOINT pointing at it; `.gcs` is the bucket's client."""
    workdir = tmp_path / "compute"
    workdir.mkdir(exist_ok=True)
    server = ComputeStandIn(workdir, op_polls=1, stop_polls=1)
    monkeypatch.setenv("NEWSCLF_COMPUTE_API_ENDPOINT", server.url)
    server.gcs = gcs  # type: ignore[attr-defined]
    # `cloud run` checks there is a dataset before it starts a VM; the e2e test uploads a real one
    gcs.bucket(gcs.test_bucket).blob("data/processed/manifest.json").upload_from_string("{}")
    # ... and that its image is in Artifact Registry: the one `cloud build` pushes for this version
    from newsclf import __version__
    from tests.artifactregistry_standin import ArtifactRegistryStandIn

    server.registry = ArtifactRegistryStandIn()  # type: ignore[attr-defined]
    server.registry.add_image(f"europe-west1-docker.pkg.dev/test-project/newsclf/newsclf-train:{__version__}")
    monkeypatch.setenv("NEWSCLF_ARTIFACTREGISTRY_API_ENDPOINT", server.registry.url)
    yield server
    fake = getattr(server.on_start, "__self__", None)
    if isinstance(fake, FakeVM):  # let its job threads finish while the bucket is still there
        fake.finish()
    server.close()
    server.registry.close()
    assert not server.violations, "requests Google would reject:\n" + "\n".join(
        f"{r.method} {r.path}: {'; '.join(e)}" for r, e in server.violations
    )


@pytest.fixture
def sandbox(standin, fake_gcs, tmp_path):
    """Started instances run the real startup script (see VMSandbox)."""
    box = VMSandbox(tmp_path / "sandbox", fake_gcs.url)
    standin.on_start = box.on_start
    standin.on_stop = box.on_stop
    yield box
    box.close()


# ------------------------------------------------------------------------------------------ test helpers
# (shared by tests/test_compute*.py)

VM = "newsclf-train"
ZONE = "europe-west1-b"
SCRIPT = (Path(__file__).resolve().parents[1] / "newsclf" / "cloud" / "startup.sh").read_text()


class FakeVM:
    """A VM whose job is a thread: job lines on the serial port, status.json/metrics.json in the bucket,
    then the guest powers off. Fast, for the CLI's follow logic; the startup script has its own tests."""

    def __init__(self, gcs, *, state="succeeded", exit_code=0, error=None, hold=None, power_off=True):
        self.gcs, self.state, self.exit_code, self.error = gcs, state, exit_code, error
        self.hold = hold  # an Event: the job waits for it before finishing
        self.power_off = power_off
        self.started = threading.Event()
        self.threads: list[threading.Thread] = []

    def on_start(self, standin, inst):
        meta = inst.metadata()
        t = threading.Thread(target=self._job, args=(standin, inst, meta["newsclf-run-id"], meta["newsclf-bucket"]))
        t.daemon = True
        t.start()
        self.threads.append(t)

    def finish(self, timeout: float = 10.0) -> None:
        """Release a held job and wait for every job thread (a test's teardown, before the emulator goes)."""
        if self.hold is not None:
            self.hold.set()
        for t in self.threads:
            t.join(timeout)

    def _put(self, bucket, name, doc):
        self.gcs.bucket(bucket).blob(name).upload_from_string(json.dumps(doc), content_type="application/json")

    def _job(self, standin, inst, run_id, bucket):
        serial = lambda text: open(inst.serial, "a").write(text)  # noqa: E731
        self._put(bucket, f"runs/{run_id}/status.json", {"state": "running", "exit_code": None})
        serial(f"[   1.0] kernel: booting\nnewsclf-vm[{run_id}]: pulling image\n")
        serial(f"Nov 27 google_metadata_script_runner[9]: startup-script: newsclf-vm[{run_id}]: pulling image\n")
        serial(f"newsclf-job[{run_id}]: epoch 1 accuracy 0.91\nnewsclf-job[older-run]: not ours\n")
        serial(f"newsclf-job[{run_id}]: half a li")  # a line split across two reads
        self.started.set()
        time.sleep(0.15)
        serial("ne\r\n")
        if self.hold is not None:
            self.hold.wait(30)
        serial(f"newsclf-job[{run_id}]: done\n")
        if self.state == "succeeded":
            self._put(
                bucket, f"runs/{run_id}/metrics.json", {"run_id": run_id, "test": {"accuracy": 0.93, "macro_f1": 0.925}}
            )
        if self.state:
            self._put(
                bucket,
                f"runs/{run_id}/status.json",
                {"state": self.state, "exit_code": self.exit_code, "error": self.error},
            )
        self.gcs.bucket(bucket).blob(f"runs/{run_id}/logs/vm-1.log").upload_from_string("epoch 1 accuracy 0.91\ndone\n")
        if self.power_off:
            time.sleep(0.1)
            standin.shutdown(inst.zone, inst.name)


def wait_until(condition, timeout: float = 30.0, what: str = "the condition") -> None:
    """Poll `condition` until it holds: for tests that act on an event (a request seen, a line written),
    never after a fixed sleep that a loaded machine outlasts."""
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.01)


def serial_reads(standin, vm: str | None = None) -> int:
    """How often the CLI has read a VM's serial port: it is following that VM's run once this grows."""
    return len(standin.calls("GET", f"/instances/{vm or '[^/]+'}/serialPort"))


def insert_bodies(standin):
    return [r.body for r in standin.calls("POST", r"/zones/[^/]+/instances$")]


def meta_items(body):
    """Metadata items of an insert body (Instance) or a setMetadata body (Metadata)."""
    return {i["key"]: i.get("value", "") for i in body.get("metadata", body)["items"]}


def last_line(text: str) -> str:
    return [line for line in text.splitlines() if line.strip()][-1]
