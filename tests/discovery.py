"""Google's contract for the REST stand-ins: request bodies checked against the published discovery
documents (shipped by PyPI's google-api-python-client), plus the value rules those documents only
state in prose (resource names, labels, run-duration bounds).

A stand-in calls `contract_errors(api, method, path, query, body)` on every request and answers 400
INVALID_ARGUMENT, as Google would, when it returns anything. The checks are deliberately strict:
unknown fields, wrong JSON types, values outside an enum or pattern, fields a method requires.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import googleapiclient

DOCUMENTS = Path(googleapiclient.__file__).parent / "discovery_cache" / "documents"

# Compute Engine's naming rule (RFC 1035), stated in every compute.v1 `name` description.
RFC1035 = re.compile(r"[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?")
# Labels (https://cloud.google.com/compute/docs/labeling-resources#requirements): at most 64;
# keys 1-63 chars starting with a lowercase letter; values 0-63 of lowercase letters, digits, _ and -.
LABEL_KEY = re.compile(r"[a-z][a-z0-9_-]{0,62}")
LABEL_VALUE = re.compile(r"[a-z0-9_-]{0,63}")
MAX_LABELS = 64
# Limit VM runtime (https://cloud.google.com/compute/docs/instances/limit-vm-runtime): 30 s to 120 days.
MIN_RUN_SECONDS, MAX_RUN_SECONDS = 30, 120 * 24 * 3600
DURATION = re.compile(r"-?\d+(\.\d{1,9})?s")
INT64 = re.compile(r"-?\d+")


@functools.cache
def document(api: str) -> dict:
    """The discovery document of `api`, e.g. "compute.v1", "cloudbuild.v1", "batch.v1"."""
    return json.loads((DOCUMENTS / f"{api}.json").read_text())


def _methods(resources: dict) -> list[dict]:
    out: list[dict] = []
    for resource in resources.values():
        out.extend(resource.get("methods", {}).values())
        out.extend(_methods(resource.get("resources", {})))
    return out


def _template_regex(template: str) -> re.Pattern:
    """`v1/{+parent}/builds` or `projects/{project}/zones/{zone}`: {+x} spans slashes, {x} does not."""
    parts = re.split(r"(\{\+?[^}]+\})", template)
    regex = "".join(
        ("(?:.+)" if p.startswith("{+") else "(?:[^/]+)") if p.startswith("{") else re.escape(p) for p in parts
    )
    return re.compile(regex)


@functools.cache
def _routes(api: str) -> list[tuple[str, re.Pattern, dict]]:
    doc = document(api)
    routes = []
    for m in _methods(doc.get("resources", {})):
        for template in {m.get("flatPath") or m["path"], m["path"]}:
            routes.append((m["httpMethod"], _template_regex(doc["servicePath"] + template), m))
    # literal paths (`.../instances/aggregated`) before templates that would also match them
    routes.sort(key=lambda r: r[1].pattern.count("[^/]") + 10 * r[1].pattern.count(".+"))
    return routes


def find_method(api: str, http_method: str, path: str) -> dict | None:
    """The discovery method that `http_method path` (path without the leading /) calls, or None."""
    path = path.lstrip("/")
    for verb, regex, method in _routes(api):
        if verb == http_method and regex.fullmatch(path):
            return method
    return None


def schema_errors(api: str, schema: dict, value: Any, where: str = "", method_id: str = "") -> list[str]:
    """What is wrong with `value` under the discovery `schema` (a property dict or {"$ref": name})."""
    if "$ref" in schema:
        return schema_errors(api, document(api)["schemas"][schema["$ref"]], value, where, method_id)
    kind, fmt = schema.get("type"), schema.get("format")
    name = where or "body"
    if kind == "any":
        return []
    if kind == "object":
        if not isinstance(value, dict):
            return [f"{name}: expected an object, got {type(value).__name__}"]
        errors: list[str] = []
        props = schema.get("properties", {})
        for key, sub in value.items():
            child = f"{where}.{key}" if where else key
            if key in props:
                errors += schema_errors(api, props[key], sub, child, method_id)
            elif "additionalProperties" in schema:
                errors += schema_errors(api, schema["additionalProperties"], sub, child, method_id)
            elif fmt != "google.protobuf.Any" and key != "@type":
                errors.append(f"Invalid JSON payload received. Unknown name \"{key}\" at '{name}': Cannot find field.")
        for key, sub in props.items():
            if method_id and method_id in sub.get("annotations", {}).get("required", []) and key not in value:
                errors.append(f"{where + '.' if where else ''}{key}: required by {method_id}")
        return errors
    if kind == "array":
        if not isinstance(value, list):
            return [f"{name}: expected a list, got {type(value).__name__}"]
        return [
            e
            for i, item in enumerate(value)
            for e in schema_errors(api, schema["items"], item, f"{name}[{i}]", method_id)
        ]
    if kind == "boolean":
        return [] if isinstance(value, bool) else [f"{name}: expected a boolean, got {value!r}"]
    if kind == "integer":
        ok = (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, str) and INT64.fullmatch(value)
        )
        return [] if ok else [f"{name}: expected an integer, got {value!r}"]
    if kind == "number":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return [] if ok or value in ("NaN", "Infinity", "-Infinity") else [f"{name}: expected a number, got {value!r}"]
    if kind == "string":
        if fmt in ("int64", "uint64"):  # proto3 JSON: a decimal string (numbers are accepted too)
            ok = isinstance(value, (str, int)) and not isinstance(value, bool) and INT64.fullmatch(str(value))
            return [] if ok else [f"{name}: expected an {fmt}, got {value!r}"]
        if "enum" in schema and isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return []  # proto3 JSON takes an enum's number too, and the REST clients send numbers
        if not isinstance(value, str):
            return [f"{name}: expected a string, got {value!r}"]
        if fmt == "google-duration" and not DURATION.fullmatch(value):
            return [f'{name}: invalid duration {value!r} (want e.g. "3600s")']
        if "enum" in schema and value not in schema["enum"]:
            return [f"{name}: invalid value {value!r}, expected one of {', '.join(schema['enum'])}"]
        if "pattern" in schema and not re.fullmatch(schema["pattern"], value):
            return [f"{name}: {value!r} does not match {schema['pattern']}"]
        return []
    return []


def label_errors(labels: dict | None, where: str = "labels") -> list[str]:
    labels = labels or {}
    errors = [f"{where}: {len(labels)} labels, at most {MAX_LABELS}"] if len(labels) > MAX_LABELS else []
    for key, value in labels.items():
        if not LABEL_KEY.fullmatch(str(key)):
            errors.append(
                f"{where}: invalid label key {key!r} (lowercase letters, digits, _ and -, starting with a letter)"
            )
        if not isinstance(value, str) or not LABEL_VALUE.fullmatch(value):
            errors.append(
                f"{where}: invalid label value {value!r} for {key!r} (0-63 lowercase letters, digits, _ and -)"
            )
    return errors


def name_errors(name: Any, where: str = "name") -> list[str]:
    if isinstance(name, str) and RFC1035.fullmatch(name):
        return []
    return [f"{where}: invalid resource name {name!r}: 1-63 characters matching [a-z]([-a-z0-9]*[a-z0-9])?"]


def duration_seconds(value: Any) -> float | None:
    """A Duration as JSON carries it ("3600s", or compute's {"seconds": "3600"}) in seconds."""
    if isinstance(value, str) and DURATION.fullmatch(value):
        return float(value[:-1])
    if isinstance(value, dict) and INT64.fullmatch(str(value.get("seconds", "0"))):
        return int(value.get("seconds", 0)) + int(value.get("nanos", 0)) / 1e9
    return None


# Resource URLs in request bodies, in the forms compute.v1 documents for each field (other forms may
# happen to work, but are not promised): Instance.machineType and InstancesSetMachineTypeRequest
# ("zones/zone/machineTypes/machine-type", full or partial URL), AttachedDiskInitializeParams.diskType
# (full URL, projects/p/zones/z/diskTypes/t or zones/z/diskTypes/t), AcceleratorConfig.acceleratorType
# (full or partial URL, e.g. projects/my-project/zones/us-central1-c/acceleratorTypes/nvidia-tesla-p100).
_API_URL = r"(?:https://(?:www|compute)\.googleapis\.com/compute/v1/)?"
MACHINE_TYPE_URL = re.compile(_API_URL + r"(?:projects/[^/]+/)?zones/[^/]+/machineTypes/[^/]+")
DISK_TYPE_URL = re.compile(_API_URL + r"(?:projects/[^/]+/)?zones/[^/]+/diskTypes/[^/]+")
ACCELERATOR_TYPE_URL = re.compile(_API_URL + r"projects/[^/]+/zones/[^/]+/acceleratorTypes/[^/]+")
# Metadata (compute.v1 Metadata.items): each value at most 256 KiB, all keys and values under 512 KB.
MAX_METADATA_VALUE, MAX_METADATA_TOTAL = 256 * 1024, 512 * 1024
# Fingerprints are `format: byte` (base64), handed back exactly as instances.get returned them.
BASE64 = re.compile(r"(?:[A-Za-z0-9+/_-]{4})*(?:[A-Za-z0-9+/_-]{2}==|[A-Za-z0-9+/_-]{3}=|[A-Za-z0-9+/_-]{2,3})?")
MIN_DISK_GB = 10  # AttachedDiskInitializeParams.diskSizeGb: "The size must be at least 10 GB."


def _url_errors(value: Any, pattern: re.Pattern, where: str, example: str) -> list[str]:
    if isinstance(value, str) and pattern.fullmatch(value):
        return []
    return [f"{where}: {value!r} is not a URL of the documented form (e.g. {example!r})"]


def _scheduling_errors(sched: Any, where: str) -> list[str]:
    """Scheduling rules from the Limit-VM-runtime and Spot VM pages (instances.insert and setScheduling)."""
    if not isinstance(sched, dict):
        return []
    errors: list[str] = []
    if "maxRunDuration" in sched:
        seconds = duration_seconds(sched["maxRunDuration"])
        if seconds is None or not MIN_RUN_SECONDS <= seconds <= MAX_RUN_SECONDS:
            errors.append(f"{where}maxRunDuration: {sched['maxRunDuration']!r} outside {MIN_RUN_SECONDS} s to 120 days")
        if not sched.get("instanceTerminationAction"):
            errors.append(f"{where}instanceTerminationAction: required with maxRunDuration")
    spot = sched.get("provisioningModel") == "SPOT" or sched.get("preemptible")
    if spot and sched.get("automaticRestart"):
        errors.append(f"{where}automaticRestart: spot instances cannot restart automatically")
    if spot and sched.get("onHostMaintenance") not in (None, "TERMINATE"):
        errors.append(f"{where}onHostMaintenance: spot instances can only TERMINATE on host maintenance")
    if sched.get("provisioningModel") == "STANDARD" and sched.get("preemptible"):
        errors.append(f"{where}preemptible: contradicts provisioningModel STANDARD")
    return errors


def _accelerator_errors(accels: Any, where: str) -> list[str]:
    errors: list[str] = []
    for i, acc in enumerate(accels if isinstance(accels, list) else []):
        if not isinstance(acc, dict):
            continue
        errors += _url_errors(
            acc.get("acceleratorType"),
            ACCELERATOR_TYPE_URL,
            f"{where}[{i}].acceleratorType",
            "projects/my-project/zones/us-central1-c/acceleratorTypes/nvidia-tesla-t4",
        )
        count = acc.get("acceleratorCount")
        if not isinstance(count, int) or count < 1:
            errors.append(f"{where}[{i}].acceleratorCount: {count!r}, at least 1")
    return errors


def _metadata_errors(metadata: Any, where: str) -> list[str]:
    if not isinstance(metadata, dict):
        return []
    errors: list[str] = []
    items = [i for i in metadata.get("items") or [] if isinstance(i, dict)]
    keys = [i.get("key") for i in items]
    for key in sorted({k for k in keys if keys.count(k) > 1}, key=str):
        errors.append(f"{where}items: duplicate key {key!r}")
    total = 0
    for item in items:
        size = len(str(item.get("value", "")).encode())
        total += size + len(str(item.get("key", "")).encode())
        if size > MAX_METADATA_VALUE:
            errors.append(f"{where}items: value of {item.get('key')!r} is {size} bytes, at most {MAX_METADATA_VALUE}")
    if total >= MAX_METADATA_TOTAL:
        errors.append(f"{where}items: {total} bytes of keys and values, must be under {MAX_METADATA_TOTAL}")
    if "fingerprint" in metadata and not BASE64.fullmatch(str(metadata["fingerprint"])):
        errors.append(f"{where}fingerprint: {metadata['fingerprint']!r} is not base64")
    return errors


def _disk_size_errors(value: Any, where: str) -> list[str]:
    if value is None or not INT64.fullmatch(str(value)) or int(value) >= MIN_DISK_GB:
        return []  # a bad type is the schema's to report
    return [f"{where}: {value} GB, the size must be at least {MIN_DISK_GB} GB"]


def _compute_rules(method_id: str, body: Any) -> list[str]:
    errors: list[str] = []
    if not isinstance(body, dict):
        return errors
    if method_id == "compute.instances.insert":
        errors += name_errors(body.get("name"))
        errors += label_errors(body.get("labels"))
        errors += _url_errors(
            body.get("machineType"), MACHINE_TYPE_URL, "machineType", "zones/us-central1-f/machineTypes/n1-standard-1"
        )
        sched = body.get("scheduling") or {}
        errors += _scheduling_errors(sched, "scheduling.")
        if body.get("guestAccelerators") and sched.get("onHostMaintenance") not in (None, "TERMINATE"):
            errors.append("scheduling.onHostMaintenance: instances with guest accelerators must be TERMINATE")
        if body.get("guestAccelerators") and sched.get("onHostMaintenance") is None:
            # the default is MIGRATE for standard instances, which GPU instances do not support
            if sched.get("provisioningModel") != "SPOT" and not sched.get("preemptible"):
                errors.append("scheduling.onHostMaintenance: instances with guest accelerators must set TERMINATE")
        errors += _accelerator_errors(body.get("guestAccelerators"), "guestAccelerators")
        errors += _metadata_errors(body.get("metadata"), "metadata.")
        for i, disk in enumerate(body.get("disks") or []):
            params = disk.get("initializeParams") if isinstance(disk, dict) else None
            if isinstance(params, dict):
                if "diskType" in params:
                    errors += _url_errors(
                        params["diskType"],
                        DISK_TYPE_URL,
                        f"disks[{i}].initializeParams.diskType",
                        "zones/us-central1-f/diskTypes/pd-balanced",
                    )
                errors += _disk_size_errors(params.get("diskSizeGb"), f"disks[{i}].initializeParams.diskSizeGb")
    if method_id == "compute.instances.setLabels":
        errors += label_errors(body.get("labels"))
        if not body.get("labelFingerprint"):
            errors.append("labelFingerprint: required (read it from instances.get)")
        elif not BASE64.fullmatch(str(body["labelFingerprint"])):
            errors.append(f"labelFingerprint: {body['labelFingerprint']!r} is not base64")
    if method_id == "compute.instances.setMetadata":
        errors += _metadata_errors(body, "")
    if method_id == "compute.instances.setScheduling":
        errors += _scheduling_errors(body, "")
    if method_id == "compute.instances.setMachineType":
        errors += _url_errors(
            body.get("machineType"), MACHINE_TYPE_URL, "machineType", "zones/us-central1-f/machineTypes/n1-standard-1"
        )
    if method_id == "compute.instances.setMachineResources":
        errors += _accelerator_errors(body.get("guestAccelerators"), "guestAccelerators")
    if method_id == "compute.disks.resize":
        if "sizeGb" not in body:
            errors.append("sizeGb: required")
        errors += _disk_size_errors(body.get("sizeGb"), "sizeGb")
    return errors


RULES = {"compute.v1": _compute_rules}


def contract_errors(api: str, http_method: str, path: str, query: dict[str, str], body: Any) -> list[str]:
    """Everything Google would reject in this request: unknown method, bad query enum, bad body."""
    method = find_method(api, http_method, path)
    if method is None:
        return [f"no {api} method answers {http_method} /{path.lstrip('/')}"]
    errors: list[str] = []
    params = method.get("parameters", {})
    for key, value in query.items():
        if key in params and params[key].get("location") == "query":
            as_text = params[key].get("type") == "string" and not ("enum" in params[key] and value.isdigit())
            errors += schema_errors(api, params[key], value if as_text else _scalar(value), key)
    if "request" in method and body is not None:
        errors += schema_errors(api, method["request"], body, method_id=method["id"])
    rules = RULES.get(api)
    return errors + (rules(method["id"], body) if rules else [])


def _scalar(text: str) -> Any:
    """A query value as its JSON type (query strings carry "true", "500", ...)."""
    try:
        return json.loads(text)
    except ValueError:
        return text
