"""The Google Cloud project a command works in: one resolver for every service."""

from __future__ import annotations

from typing import TYPE_CHECKING

from newsclf.errors import ConfigError

if TYPE_CHECKING:
    from newsclf.config import Settings


def missing_project_message(*, flag: bool, adc: bool) -> str:
    """flag: the command takes --project; adc: Application Default Credentials were asked too."""
    ways = ["set NEWSCLF_GCP_PROJECT"]
    if flag:
        ways.append("pass --project")
    if adc:
        ways.append("run `gcloud config set project PROJECT`")
    said = (
        ways[0]
        if len(ways) == 1
        else (" or ".join(ways) if len(ways) == 2 else f"{', '.join(ways[:-1])}, or {ways[-1]}")
    )
    return f"No Google Cloud project set: {said}"


def resolve_project(settings: Settings, project: str | None = None, *, endpoint: str | None, flag: bool = False) -> str:
    """`project` (a --project flag), else NEWSCLF_GCP_PROJECT, else the Application Default Credentials'
    project, unless `endpoint` (the service about to be called) is a local stand-in, which has no ADC.
    A broken key file is named as that, not as a missing project."""
    from newsclf.cloud.google.endpoints import is_local_endpoint

    project = project or settings.gcp_project
    if project:
        return project
    if is_local_endpoint(endpoint):
        raise ConfigError(missing_project_message(flag=flag, adc=False))
    import google.auth
    from google.auth.exceptions import GoogleAuthError

    from newsclf.cloud.google.credentials import check_credentials_file

    check_credentials_file()
    try:
        _, project = google.auth.default()
    except GoogleAuthError:  # no ADC at all: the message names the setting
        project = None
    if not project:
        raise ConfigError(missing_project_message(flag=flag, adc=True))
    return project
