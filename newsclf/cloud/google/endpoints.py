"""API endpoints: the one check for a local stand-in or emulator, and the client arguments it implies.

Every NEWSCLF_*_API_ENDPOINT setting points one service's client elsewhere (tests: local stand-ins
speaking the REST API). A local endpoint takes anonymous calls, so no Google credentials are looked up.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from newsclf.config import Settings


def is_local_endpoint(endpoint: str | None) -> bool:
    """An http:// or localhost endpoint is a stand-in or emulator: no Google credentials there."""
    if not endpoint:
        return False
    host = re.sub(r"^[a-z]+://", "", endpoint).split("/", 1)[0].rsplit(":", 1)[0]
    return endpoint.startswith("http://") or host in ("localhost", "127.0.0.1", "[::1]")


def client_kwargs(endpoint: str | None, credentials: Any = None) -> dict[str, Any]:
    """`credentials=` and `client_options=` for a google-cloud-* client: the endpoint when set (it
    keeps an http:// scheme), anonymous credentials for a local one, else `credentials` (None: ADC)."""
    from google.api_core.client_options import ClientOptions

    kwargs: dict[str, Any] = {"credentials": credentials}
    if endpoint:
        kwargs["client_options"] = ClientOptions(api_endpoint=endpoint)
        if is_local_endpoint(endpoint):
            from google.auth.credentials import AnonymousCredentials

            kwargs["credentials"] = AnonymousCredentials()
    return kwargs


def all_local(settings: Settings) -> bool:
    """Whether every service is a local emulator or stand-in (then no credentials are needed at all)."""
    return bool(os.environ.get("STORAGE_EMULATOR_HOST")) and all(
        is_local_endpoint(e)
        for e in (
            settings.artifactregistry_api_endpoint,
            settings.cloudbuild_api_endpoint,
            settings.compute_api_endpoint,
            settings.batch_api_endpoint,
            settings.iam_api_endpoint,
            settings.resourcemanager_api_endpoint,
            settings.secretmanager_api_endpoint,
        )
    )
