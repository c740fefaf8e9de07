"""Error bodies shaped like Google APIs' JSON errors, shared by the REST stand-ins."""

from __future__ import annotations


def google_error(code: int, status: str, message: str, details: list[dict] | None = None) -> dict:
    return {"error": {"code": code, "message": message, "status": status, "details": details or []}}


def service_disabled(service: str, title: str, number: str = "123456789012") -> tuple[int, dict]:
    """403 as Google answers when `service` (e.g. artifactregistry.googleapis.com) is not enabled."""
    url = f"https://console.developers.google.com/apis/api/{service}/overview?project={number}"
    msg = (
        f"{title} has not been used in project {number} before or it is disabled. Enable it by visiting {url} "
        "then retry. If you enabled this API recently, wait a few minutes for the action to propagate to our "
        "systems and retry."
    )
    details = [
        {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "SERVICE_DISABLED",
            "domain": "googleapis.com",
            "metadata": {"service": service, "consumer": f"projects/{number}"},
        },
        {
            "@type": "type.googleapis.com/google.rpc.Help",
            "links": [{"description": "Google developers console API activation", "url": url}],
        },
    ]
    return 403, google_error(403, "PERMISSION_DENIED", msg, details)
