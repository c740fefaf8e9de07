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
                errors.append(f'Invalid JSON payload received. Unknown name "{key}" at \'{name}\': Cannot find field.')
        for key, sub in props.items():
            if method_id and method_id in sub.get("annotations", {}).get("required", []) and key not in value:
                errors.append(f"{where + '.' if where else ''}{key}: required by {method_id}")
        return errors
    if kind == "array":
        if not isinstance(value, list):
            return [f"{name}: expected a list, got {type(value).__name__}"]
        return [e for i, item in enumerate(value) for e in schema_errors(api, schema["items"], item, f"{name}[{i}]", method_id)]
    if kind == "boolean":
        return [] if isinstance(value, bool) else [f"{name}: expected a boolean, got {value!r}"]
    if kind == "integer":
        ok = (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, str) and INT64.fullmatch(value))
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
            return [f"{name}: invalid duration {value!r} (want e.g. \"3600s\")"]
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
            errors.append(f"{where}: invalid label key {key!r} (lowercase letters, digits, _ and -, starting with a letter)")
        if not isinstance(value, str) or not LABEL_VALUE.fullmatch(value):
            errors.append(f"{where}: invalid label value {value!r} for {key!r} (0-63 lowercase letters, digits, _ and -)")
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


def _compute_rules(method_id: str, body: Any) -> list[str]:
    errors: list[str] = []
    if method_id == "compute.instances.insert" and isinstance(body, dict):
        errors += name_errors(body.get("name"))
        errors += label_errors(body.get("labels"))
        sched = body.get("scheduling") or {}
        if "maxRunDuration" in sched:
            seconds = duration_seconds(sched["maxRunDuration"])
            if seconds is None or not MIN_RUN_SECONDS <= seconds <= MAX_RUN_SECONDS:
                errors.append(
                    f"scheduling.maxRunDuration: {sched['maxRunDuration']!r} outside {MIN_RUN_SECONDS} s to 120 days"
                )
            if not sched.get("instanceTerminationAction"):
                errors.append("scheduling.instanceTerminationAction: required with maxRunDuration")
        if body.get("guestAccelerators") and sched.get("onHostMaintenance") not in (None, "TERMINATE"):
            errors.append("scheduling.onHostMaintenance: instances with guest accelerators must be TERMINATE")
        if sched.get("provisioningModel") == "SPOT" and sched.get("automaticRestart"):
            errors.append("scheduling.automaticRestart: spot instances cannot restart automatically")
    if method_id == "compute.instances.setLabels" and isinstance(body, dict):
        errors += label_errors(body.get("labels"))
        if not body.get("labelFingerprint"):
            errors.append("labelFingerprint: required (read it from instances.get)")
    if method_id == "compute.instances.setScheduling" and isinstance(body, dict) and "maxRunDuration" in body:
        seconds = duration_seconds(body["maxRunDuration"])
        if seconds is None or not MIN_RUN_SECONDS <= seconds <= MAX_RUN_SECONDS:
            errors.append(f"maxRunDuration: {body['maxRunDuration']!r} outside {MIN_RUN_SECONDS} s to 120 days")
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
