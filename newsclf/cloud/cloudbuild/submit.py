"""Cloud Build: upload the packed source, submit the build, follow its log until it ends."""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.filesize import decimal

from newsclf.cloud import layout
from newsclf.cloud.cloudbuild.context import (
    BuildContext,
    installed_context,
    project_version,
    version_tag,
)
from newsclf.cloud.cloudbuild.image import image_repository
from newsclf.cloud.cloudbuild.logtail import LogTail, transient
from newsclf.cloud.cloudbuild.source import BIG_SOURCE_BYTES, PackedSource, pack_source
from newsclf.cloud.google.endpoints import client_kwargs
from newsclf.cloud.google.errors import (
    CLOUDBUILD,
    api_disabled,
    credentials_error,
    unreachable,
)
from newsclf.cloud.google.project import resolve_project
from newsclf.errors import CloudError

if TYPE_CHECKING:
    from newsclf.config import Settings

log = logging.getLogger(__name__)

DOCKER_BUILDER = "gcr.io/cloud-builders/docker"
BUILD_TAGS = ["newsclf"]  # Cloud Build tags, to find these builds: gcloud builds list --filter=tags=newsclf
BUILD_TIMEOUT_S = 3600  # CUDA torch layers are GBs: download + push outlast Cloud Build's 10-minute default
# The default worker (e2-standard-2: 2 vCPUs, 100 GB disk) is sized for small images. This one is ~7 GB
# (nvidia/torch/triton wheels): `uv sync` unpacks them and compiles bytecode in the builder stage, the
# runtime stage copies the whole venv again, then docker compresses and pushes every layer; all of it
# is CPU-bound and multi-threaded, so 8 vCPUs (8 GB memory is plenty: wheels are streamed, not held)
# cut the build time roughly in proportion. Build minutes on it cost more, but far fewer are billed.
BUILD_MACHINE = "E2_HIGHCPU_8"
# Disk: the builder's venv (~7 GB) + the runtime stage's copy (~7 GB) + the exported, compressed
# layers (~3-4 GB) + base images and uv's downloads, ~25 GB at peak; 200 GB leaves room for the
# image to grow and for docker's layer cache without a "no space left on device" halfway through.
BUILD_DISK_GB = 200
LOGS_PREFIX = f"{layout.BUILDS_PREFIX}logs"  # logs_bucket gs://BUCKET/builds/logs → builds/logs/log-<id>.txt
POLL_S = 2.0  # seconds between build-status polls and log reads while following a build
TRANSIENT_GRACE_S = 120.0  # keep following through network blips this long before giving up
LOG_TAIL_LINES = 30  # lines of the log kept to show when a build fails
TERMINAL = frozenset({"SUCCESS", "FAILURE", "INTERNAL_ERROR", "TIMEOUT", "CANCELLED", "EXPIRED"})


def cloudbuild_client(settings: Settings) -> Any:
    """A CloudBuildClient over REST; NEWSCLF_CLOUDBUILD_API_ENDPOINT points it elsewhere."""
    from google.cloud.devtools import cloudbuild_v1

    try:
        return cloudbuild_v1.CloudBuildClient(transport="rest", **client_kwargs(settings.cloudbuild_api_endpoint))
    except Exception as e:
        raise _translate(e, settings, project=settings.gcp_project or "?") from e


def _translate(e: BaseException, settings: Settings, project: str) -> BaseException:
    """A CloudError naming the fix for the failures people can fix; other errors unchanged."""
    from google.api_core import exceptions as gexc

    if isinstance(e, CloudError):
        return e
    credentials = credentials_error(e)
    if credentials is not None:
        return credentials
    text = str(getattr(e, "message", "") or e)
    if isinstance(e, gexc.PermissionDenied | gexc.Forbidden):
        if api_disabled(e):
            return CloudError(
                f"The Cloud Build API is disabled in project {project}: enable it with "
                "`gcloud services enable cloudbuild.googleapis.com artifactregistry.googleapis.com "
                f"--project={project}`"
            )
        return CloudError(
            f"No permission to run Cloud Build in project {project}: ask for roles/cloudbuild.builds.editor "
            f"(`gcloud projects add-iam-policy-binding {project} --member=user:YOU "
            "--role=roles/cloudbuild.builds.editor`)"
        )
    if isinstance(e, gexc.NotFound):
        if "repositor" in text.lower():
            return _repo_missing(settings, project)
        return CloudError(f"Project {project} not found by Cloud Build: check NEWSCLF_GCP_PROJECT or --project")
    if isinstance(e, gexc.InvalidArgument):
        return CloudError(f"Cloud Build refused the build: {text}; check NEWSCLF_IMAGE and NEWSCLF_REGION")
    if unreachable(e):
        where = settings.cloudbuild_api_endpoint or CLOUDBUILD.api
        return CloudError(f"Cannot reach Cloud Build at {where}: check the network or {CLOUDBUILD.endpoint_setting}")
    return e


def _repo_missing(settings: Settings, project: str) -> CloudError:
    repo, region = settings.artifact_repo, settings.region
    return CloudError(
        f"Artifact Registry repository '{repo}' not found in {region} (project {project}): create it with "
        f"`gcloud artifacts repositories create {repo} --repository-format=docker --location={region} "
        f"--project={project}`, or set NEWSCLF_ARTIFACT_REPO/NEWSCLF_REGION"
    )


# --- upload, submit, follow ---------------------------------------------------------------------


def upload_source(client: Any, bucket: str, packed: PackedSource) -> bool:
    """Upload the archive to gs://BUCKET/builds/<sha256>.tar.gz unless it is there; True if uploaded."""
    from newsclf.cloud.storage.errors import translate
    from newsclf.cloud.storage.retry import retry_policy
    from newsclf.cloud.storage.upload import upload_file

    b = client.bucket(bucket)
    try:
        if b.get_blob(packed.object_name, retry=retry_policy()) is not None:
            return False
    except Exception as e:
        raise (translate(e, bucket, "list") or e) from e
    # create-only: a concurrent upload of the same bytes counts as done, as the name is their hash
    upload_file(client, b, packed.path, packed.object_name, if_generation_match=0)
    return True


def build_request(*, bucket: str, object_name: str, image: str, tag: str, version: str | None = None) -> Any:
    """The Cloud Build `Build`: one docker build step on a worker big enough for the image; the
    images (source hash, newsclf version, latest) are pushed when it succeeds."""
    from google.cloud.devtools import cloudbuild_v1
    from google.protobuf import duration_pb2

    tags = [tag, *([version_tag(version)] if version else []), "latest"]
    tagged = [f"{image}:{t}" for t in tags]
    return cloudbuild_v1.Build(
        source=cloudbuild_v1.Source(storage_source=cloudbuild_v1.StorageSource(bucket=bucket, object_=object_name)),
        steps=[
            cloudbuild_v1.BuildStep(name=DOCKER_BUILDER, args=["build", *[a for t in tagged for a in ("-t", t)], "."])
        ],
        images=tagged,
        tags=BUILD_TAGS,
        logs_bucket=f"gs://{bucket}/{LOGS_PREFIX}",
        timeout=duration_pb2.Duration(seconds=BUILD_TIMEOUT_S),
        options=cloudbuild_v1.BuildOptions(
            machine_type=BUILD_MACHINE,
            disk_size_gb=BUILD_DISK_GB,  # proto-plus takes an enum's name
        ),
    )


@dataclass
class BuildResult:
    build_id: str
    status: str
    image: str  # IMAGE:<source sha256>
    digest: str | None
    duration_s: float | None
    log_url: str | None
    source: str  # gs://BUCKET/builds/<sha256>.tar.gz
    uploaded: bool = False
    log_tail: list[str] = field(default_factory=list)
    version: str | None = None  # the newsclf version built; the image is also tagged with it
    version_image: str | None = None  # IMAGE:<version>: what `cloud run` of that version starts

    def to_dict(self) -> dict[str, Any]:
        return {
            "build_id": self.build_id,
            "status": self.status,
            "image": self.image,
            "digest": self.digest,
            "duration_s": self.duration_s,
            "log_url": self.log_url,
            "source": self.source,
            "version": self.version,
            "version_image": self.version_image,
        }


class BuildFailedError(CloudError):
    """The build ran and did not succeed; `result.log_tail` holds the end of its log."""

    def __init__(self, message: str, result: BuildResult) -> None:
        super().__init__(message)
        self.result = result


def _log_object(logs_bucket: str, build_id: str) -> tuple[str, str]:
    bucket, _, prefix = logs_bucket.removeprefix("gs://").partition("/")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/log-{build_id}.txt" if prefix else f"log-{build_id}.txt"


def _duration(build: Any) -> float | None:
    start, finish = build.start_time, build.finish_time
    if not start or not finish or start.timestamp() <= 0 or finish.timestamp() <= 0:
        return None
    return round(finish.timestamp() - start.timestamp(), 1)


def _digest(build: Any, image: str) -> str | None:
    images = list(build.results.images) if build.results else []
    for built in images:
        if built.name == image:
            return built.digest or None
    return (images[0].digest or None) if images else None


def _failure_error(result: BuildResult, build: Any, settings: Settings, project: str) -> BuildFailedError:
    tail = "\n".join(result.log_tail)
    if re.search(r"name unknown: Repository .* not found|repository .* not found", tail, re.IGNORECASE):
        return BuildFailedError(str(_repo_missing(settings, project)), result)
    if "artifactregistry.repositories.uploadArtifacts" in tail or "denied: Permission" in tail:
        return BuildFailedError(
            f"Cloud Build could not push {result.image.rsplit(':', 1)[0]}: grant the Cloud Build service account "
            f"roles/artifactregistry.writer on repository '{settings.artifact_repo}'",
            result,
        )
    detail = (build.failure_info.detail if build.failure_info else "") or build.status_detail or ""
    why = f" ({detail})" if detail else ""
    where = f"; full log: {result.log_url}" if result.log_url else ""
    return BuildFailedError(
        f"Cloud Build {result.build_id} ended {result.status}{why}: fix the error in the log above and rerun "
        f"`newsclf cloud build`{where}",
        result,
    )


def submit_build(
    settings: Settings,
    *,
    source_dir: Path | None = None,
    project: str | None = None,
    wait: bool = True,
    on_log: Callable[[str], None] | None = None,
    build_client: Any = None,
    storage: Any = None,
) -> BuildResult:
    """Pack `source_dir` (None: the installed newsclf), upload and build the training image; with
    `wait`, follow the log (each complete line goes to `on_log`) until the build ends. Raises
    BuildFailedError when it does not succeed."""
    from newsclf.cloud.storage.client import require_bucket, storage_client

    project = resolve_project(settings, project, endpoint=settings.cloudbuild_api_endpoint, flag=True)
    settings = settings.model_copy(update={"gcp_project": project})
    bucket = require_bucket(settings)
    image = image_repository(settings, project)
    # clients first: missing credentials fail fast, before anything is packed or uploaded
    client = build_client or cloudbuild_client(settings)
    storage = storage or storage_client(settings)

    workdir = Path(tempfile.mkdtemp(prefix="newsclf-build-"))
    try:
        if source_dir is None:
            context = installed_context(workdir / "context")
        else:
            context = BuildContext(Path(source_dir), str(Path(source_dir).resolve()))
        packed = pack_source(context.root, workdir)
        version = project_version(context.root)
        log.info(
            "Packed %d files (%s) of %s, sha256 %s",
            len(packed.files),
            decimal(packed.size),
            context.label,
            packed.sha256[:12],
        )
        if version is None:
            log.warning(
                "No newsclf version in %s/newsclf/__init__.py: the image gets no version tag, so "
                "`newsclf cloud run` will not find it (pass --image)",
                context.root,
            )
        if packed.size > BIG_SOURCE_BYTES:
            log.warning(
                "The source archive is %s: add large files to .dockerignore to keep builds fast",
                decimal(packed.size),
            )
        source_uri = layout.uri(bucket, packed.object_name)
        uploaded = upload_source(storage, bucket, packed)
        log.info("Uploaded %s" if uploaded else "Source already in %s: upload skipped", source_uri)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    request = build_request(
        bucket=bucket, object_name=packed.object_name, image=image, tag=packed.sha256, version=version
    )
    try:
        operation = client.create_build(project_id=project, build=request)
        build = operation.metadata.build
    except Exception as e:
        raise _translate(e, settings, project) from e
    result = BuildResult(
        build_id=build.id,
        status=build.status.name,
        image=f"{image}:{packed.sha256}",
        digest=None,
        duration_s=None,
        log_url=build.log_url or None,
        source=source_uri,
        uploaded=uploaded,
        version=version,
        version_image=f"{image}:{version_tag(version)}" if version else None,
    )
    log.info("Cloud Build %s started%s", build.id, f": {build.log_url}" if build.log_url else "")
    if not wait:
        return result

    logs_bucket, log_name = _log_object(build.logs_bucket or request.logs_bucket, build.id)
    tail = LogTail(storage.bucket(logs_bucket), log_name)
    kept: deque[str] = deque(maxlen=LOG_TAIL_LINES)
    started = time.monotonic()

    def show(lines: list[str]) -> None:
        for line in lines:
            kept.append(line)
            if on_log is not None:
                on_log(line)

    # polled, not operation.result(): the log is read between polls, so a person sees the build as it runs
    last_ok = time.monotonic()
    while True:
        try:
            build = client.get_build(project_id=project, id=result.build_id)
            last_ok = time.monotonic()
        except Exception as e:
            if transient(e) and time.monotonic() - last_ok < TRANSIENT_GRACE_S:
                log.debug("polling Cloud Build failed (%s); retrying", e)
                time.sleep(POLL_S)
                continue
            raise _translate(e, settings, project) from e
        done = build.status.name in TERMINAL
        show(tail.read(final=done))  # read after the status: a finished build's log is complete
        if done:
            break
        time.sleep(POLL_S)

    result.status = build.status.name
    result.digest = _digest(build, result.image)
    result.duration_s = _duration(build) or round(time.monotonic() - started, 1)
    result.log_url = build.log_url or result.log_url
    result.log_tail = list(kept)
    if result.status != "SUCCESS":
        raise _failure_error(result, build, settings, project)
    return result
