"""The training image: its repository and tags, and the Artifact Registry check `cloud run` makes
before a VM is paid to pull it."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from newsclf.cloud.cloudbuild.context import version_tag
from newsclf.cloud.google.endpoints import client_kwargs
from newsclf.cloud.google.errors import ARTIFACTREGISTRY, api_failure
from newsclf.errors import CloudError

if TYPE_CHECKING:
    from newsclf.config import Settings

IMAGE_NAME = "newsclf-train"


def image_repository(settings: Settings, project: str) -> str:
    """The image without a tag: settings.image's repository, else
    REGION-docker.pkg.dev/PROJECT/REPO/newsclf-train in Artifact Registry."""
    if settings.image:
        name = settings.image.split("@", 1)[0]
        head, _, last = name.rpartition("/")
        if ":" in last:
            last = last.split(":", 1)[0]
        return f"{head}/{last}" if head else last
    return f"{settings.region}-docker.pkg.dev/{project}/{settings.artifact_repo}/{IMAGE_NAME}"


# LOCATION-docker.pkg.dev/PROJECT/REPOSITORY/PACKAGE[:TAG][@DIGEST] (a package name may hold slashes)
_AR_IMAGE = re.compile(
    r"(?P<location>[a-z0-9-]+)-docker\.pkg\.dev/(?P<project>[^/]+)/(?P<repo>[^/]+)/(?P<package>[^:@]+)"
    r"(?::(?P<tag>[^:@/]+))?(?:@(?P<digest>[a-z0-9]+:[0-9a-f]+))?"
)
_SOURCE_HASH_TAG = re.compile(r"[0-9a-f]{64}")
AR_CALL_TIMEOUT_S = 30.0


def run_image(settings: Settings, project: str) -> tuple[str, str | None]:
    """(image, newsclf version it must hold) for `cloud run`: --image/NEWSCLF_IMAGE as given when it
    names a tag or digest (version None: the user's choice), else its repository (default: the one
    `cloud build` pushes to) at the tag of this newsclf's version, which `cloud build` gives it."""
    from newsclf import __version__

    image = settings.image
    if image and ("@" in image or ":" in image.rsplit("/", 1)[-1]):
        return image, None
    return f"{image_repository(settings, project)}:{version_tag(__version__)}", __version__


def check_image(settings: Settings, image: str, *, version: str | None = None, client: Any = None) -> bool:
    """Ask Artifact Registry whether `image` is there, before a VM is paid to pull it; False for an
    image elsewhere (nothing to ask). Raises CloudError naming `newsclf cloud build` when it is missing
    (with `version`: naming the newsclf version the repository's latest image was built from)."""
    from google.api_core import exceptions as gexc

    m = _AR_IMAGE.fullmatch(image)
    if m is None:
        return False
    from urllib.parse import quote

    repo = f"{m['location']}-docker.pkg.dev/{m['project']}/{m['repo']}"
    package = (
        f"projects/{m['project']}/locations/{m['location']}/repositories/{m['repo']}/packages/"
        + quote(m["package"], safe="")  # slashes in a package name are escaped in its resource name
    )
    try:
        if client is None:
            client = artifactregistry_client(settings)
        if m["digest"]:
            client.get_version(name=f"{package}/versions/{m['digest']}", timeout=AR_CALL_TIMEOUT_S)
        else:
            client.get_tag(name=f"{package}/tags/{m['tag'] or 'latest'}", timeout=AR_CALL_TIMEOUT_S)
        return True
    except gexc.NotFound:
        pass
    except Exception as e:
        raise _registry_error(e, settings, m["project"], image) from e
    if version is None:
        raise CloudError(
            f"No image {image} in Artifact Registry: build it with `newsclf cloud build`, or fix --image/NEWSCLF_IMAGE"
        )
    built = _latest_version(client, package)
    if built is not None and built != version:
        raise CloudError(
            f"The training image in {repo} is for newsclf {built}, and this is newsclf {version}: build the "
            f"image for this version with `newsclf cloud build` (it pushes {image})"
        )
    raise CloudError(
        f"No training image for newsclf {version} in {repo} ({image}): build it with `newsclf cloud build`"
    )


def _latest_version(client: Any, package: str) -> str | None:
    """The newsclf version `cloud build` tagged the repository's `latest` image with, if it can tell."""
    from google.cloud import artifactregistry_v1

    try:
        latest = client.get_tag(name=f"{package}/tags/latest", timeout=AR_CALL_TIMEOUT_S)
        found = client.get_version(
            request=artifactregistry_v1.GetVersionRequest(
                name=latest.version, view=artifactregistry_v1.VersionView.FULL
            ),
            timeout=AR_CALL_TIMEOUT_S,
        )
    except Exception:  # only to say which version is there: the error names the fix without it
        return None
    tags = [t.name.rsplit("/", 1)[-1] for t in found.related_tags]
    versions = [t for t in tags if t != "latest" and not _SOURCE_HASH_TAG.fullmatch(t)]
    return versions[0] if versions else None


def _registry_error(e: BaseException, settings: Settings, project: str, image: str) -> BaseException:
    answer = api_failure(
        e,
        ARTIFACTREGISTRY,
        project=project,
        what=f"read the image {image}",
        role="roles/artifactregistry.reader",
        member="user:YOU@example.com",
        endpoint=settings.artifactregistry_api_endpoint,
    )
    return CloudError(answer[1]) if answer is not None else e


def artifactregistry_client(settings: Settings, credentials: Any = None) -> Any:
    """An ArtifactRegistryClient over REST; NEWSCLF_ARTIFACTREGISTRY_API_ENDPOINT points it elsewhere."""
    from google.cloud import artifactregistry_v1

    kwargs = client_kwargs(settings.artifactregistry_api_endpoint, credentials)
    return artifactregistry_v1.ArtifactRegistryClient(transport="rest", **kwargs)
