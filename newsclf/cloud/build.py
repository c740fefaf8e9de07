"""Cloud Build: pack the source deterministically, upload it content-addressed, build and push the image."""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import re
import shutil
import stat
import tarfile
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from newsclf.cloud import layout
from newsclf.errors import CloudError, ConfigError, InputError

if TYPE_CHECKING:
    from newsclf.config import Settings

log = logging.getLogger(__name__)

IMAGE_NAME = "newsclf-train"
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
SOURCE_MTIME = 315619200  # 1980-01-02: every archived file's mtime; zip-safe in any time zone
BIG_SOURCE_BYTES = 50 * 1024**2  # warn: something large slipped past .dockerignore
ALWAYS_SENT = ("Dockerfile", ".dockerignore")  # docker sends these whatever the ignore files say
TERMINAL = frozenset({"SUCCESS", "FAILURE", "INTERNAL_ERROR", "TIMEOUT", "CANCELLED", "EXPIRED"})


# --- ignore files -------------------------------------------------------------------------------


def _split(path: str) -> list[str]:
    return [p for p in path.split("/") if p]


class DockerIgnore:
    """`.dockerignore` rules as Docker applies them (moby/patternmatcher).

    Patterns are Go globs on paths from the context root (`*` stays inside one directory, `**`
    crosses any number); a pattern that matches a parent directory matches everything under it;
    `!` re-includes; the last matching pattern wins.
    """

    def __init__(self, lines: Iterable[str]) -> None:
        self.rules: list[tuple[bool, str, Callable[[str], bool]]] = []
        for raw in lines:
            line = raw.lstrip("\ufeff")
            if line.startswith("#"):
                continue
            line = line.strip()
            if not line:
                continue
            negate = line.startswith("!")
            if negate:
                line = line[1:].strip()
            pattern = os.path.normpath(line).replace(os.sep, "/") if line else line
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
            self.rules.append((negate, pattern, self._compile(pattern)))

    @classmethod
    def read(cls, path: Path) -> DockerIgnore:
        return cls(path.read_text(encoding="utf-8").splitlines() if path.is_file() else [])

    @staticmethod
    def _compile(pattern: str) -> Callable[[str], bool]:
        # A transcription of patternmatcher's Pattern.compile: exact, prefix, suffix or regexp match.
        regex, kind, i, n, in_class = "^", "exact", 0, len(pattern), False
        while i < n:
            ch, start = pattern[i], i
            if ch == "*":
                if i + 1 < n and pattern[i + 1] == "*":
                    i += 1
                    if i + 1 < n and pattern[i + 1] == "/":
                        i += 1
                    if i + 1 >= n:  # trailing `**`: everything below
                        if kind == "exact":
                            kind = "prefix"
                        else:
                            regex += ".*"
                            kind = "regexp"
                    else:
                        regex += "(.*/)?"
                        kind = "regexp"
                    if start == 0:
                        kind = "suffix"
                else:
                    regex += "[^/]*"
                    kind = "regexp"
            elif ch == "?":
                regex += "[^/]"
                kind = "regexp"
            elif ch == "\\":
                if i + 1 < n:
                    i += 1
                    regex += re.escape(pattern[i])
                else:
                    regex += "\\\\"
            elif ch in "[]":
                in_class = ch == "["
                regex += ch
                kind = "regexp"
            else:
                regex += ch if in_class and ch not in "[\\" else re.escape(ch)  # ranges and ^ live in classes
            i += 1
        if kind == "exact":
            return lambda path: path == pattern
        if kind == "prefix":
            prefix = pattern[:-2]
            return lambda path: path.startswith(prefix)
        if kind == "suffix":
            suffix = pattern[2:]
            return lambda path: path.endswith(suffix) or (suffix.startswith("/") and path == suffix[1:])
        compiled = re.compile(regex + "$")
        return lambda path: compiled.match(path) is not None

    def excluded(self, path: str) -> bool:
        """Whether `path` (relative, `/`-separated) is left out of the build context."""
        parts = _split(path)
        parents = ["/".join(parts[: i + 1]) for i in range(len(parts) - 1)]
        matched = False
        for negate, _, match in self.rules:
            if negate != matched:  # only a rule that could change the answer is evaluated
                continue
            if match(path) or any(match(p) for p in parents):
                matched = not negate
        return matched

    def may_include_below(self, directory: str) -> bool:
        """Whether some `!` rule could re-include a path under an excluded `directory`."""
        dparts = _split(directory)
        for negate, pattern, _ in self.rules:
            if not negate:
                continue
            literal = []
            for part in _split(pattern):
                if any(c in part for c in "*?[\\"):
                    return True  # a wildcard: cannot rule it out cheaply
                literal.append(part)
            k = min(len(literal), len(dparts))
            if literal[:k] == dparts[:k] and len(literal) > len(dparts):
                return True
        return False


class GitIgnore:
    """`.gcloudignore` rules, which follow .gitignore: a name without `/` matches at any depth,
    `dir/` matches directories only, `!` re-includes, `#!include:FILE` reads another file's rules,
    and nothing under an ignored directory can be re-included.
    """

    def __init__(self, lines: Iterable[str], root: Path | None = None) -> None:
        self.rules: list[tuple[bool, bool, re.Pattern[str]]] = []
        for raw in lines:
            line = raw.rstrip("\n").lstrip("\ufeff")
            if line.startswith("#!include:"):
                if root is not None:
                    included = root / line[len("#!include:") :].strip()
                    if included.is_file():
                        sub = GitIgnore(included.read_text(encoding="utf-8").splitlines())
                        self.rules.extend(sub.rules)
                continue
            if line.startswith("#"):
                continue
            line = re.sub(r"(?<!\\)\s+$", "", line)  # trailing spaces end a pattern unless escaped
            if not line:
                continue
            negate = line.startswith("!")
            if negate:
                line = line[1:]
            dir_only = line.endswith("/")
            line = line.rstrip("/")
            if not line:
                continue
            anchored = "/" in line
            line = line.lstrip("/")
            body = self._glob_regex(line)
            regex = ("^" if anchored else "^(?:.*/)?") + body + "$"
            self.rules.append((negate, dir_only, re.compile(regex)))

    @classmethod
    def read(cls, path: Path) -> GitIgnore:
        lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
        return cls(lines, root=path.parent)

    @staticmethod
    def _glob_regex(pattern: str) -> str:
        out, i, n = "", 0, len(pattern)
        while i < n:
            if pattern.startswith("**/", i):
                out += "(?:.*/)?"
                i += 3
            elif pattern.startswith("/**", i) and i + 3 == n:
                out += "/.*"
                i += 3
            elif pattern.startswith("**", i):
                out += ".*"
                i += 2
            elif pattern[i] == "*":
                out += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                out += "[^/]"
                i += 1
            elif pattern[i] == "[":
                end = pattern.find("]", i + 1)
                if end == -1:
                    out += re.escape("[")
                    i += 1
                else:
                    cls_body = pattern[i + 1 : end].replace("\\", "\\\\")
                    if cls_body.startswith("!"):
                        cls_body = "^" + cls_body[1:]
                    out += f"[{cls_body}]"
                    i = end + 1
            elif pattern[i] == "\\" and i + 1 < n:
                out += re.escape(pattern[i + 1])
                i += 2
            else:
                out += re.escape(pattern[i])
                i += 1
        return out

    def excluded(self, path: str, is_dir: bool) -> bool:
        matched = False
        for negate, dir_only, regex in self.rules:
            if dir_only and not is_dir:
                continue
            if regex.match(path):
                matched = not negate
        return matched


# --- the source archive -------------------------------------------------------------------------


@dataclass
class PackedSource:
    """A deterministic .tar.gz of the build context: same tree, same bytes, same sha256."""

    path: Path
    sha256: str
    size: int
    files: list[str] = field(default_factory=list)

    @property
    def object_name(self) -> str:
        return layout.build_source(self.sha256)


def source_files(root: Path) -> list[str]:
    """The paths (sorted, `/`-separated, relative to root) that go into the build context."""
    docker = DockerIgnore.read(root / ".dockerignore")
    gcloud = GitIgnore.read(root / ".gcloudignore")
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir
        keep = []
        for name in sorted(dirnames):
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if os.path.islink(os.path.join(dirpath, name)):
                filenames.append(name)  # a link to a directory is archived as a link
                continue
            if gcloud.excluded(rel, is_dir=True):
                continue
            if docker.excluded(rel) and not docker.may_include_below(rel):
                continue
            keep.append(name)
        dirnames[:] = keep
        for name in filenames:
            rel = f"{rel_dir}/{name}" if rel_dir else name
            full = os.path.join(dirpath, name)
            mode = os.lstat(full).st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
                continue  # sockets, fifos: nothing docker could use
            if rel in ALWAYS_SENT:
                found.append(rel)
            elif not docker.excluded(rel) and not gcloud.excluded(rel, is_dir=False):
                found.append(rel)
    return sorted(found)


def _tarinfo(root: Path, rel: str) -> tarfile.TarInfo:
    full = root / rel
    st = os.lstat(full)
    info = tarfile.TarInfo(rel)
    info.mtime = SOURCE_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if stat.S_ISLNK(st.st_mode):
        info.type = tarfile.SYMTYPE
        info.linkname = os.readlink(full)
        info.mode = 0o777
    else:
        info.size = st.st_size
        info.mode = 0o755 if st.st_mode & stat.S_IXUSR else 0o644  # only the executable bit survives
    return info


def pack_source(root: Path, dest_dir: Path) -> PackedSource:
    """Pack the build context of `root` into `dest_dir`/source.tar.gz: sorted entries, fixed
    mtime/owner/mode, gzip header mtime 0, so the same tree always gives the same sha256."""
    root = Path(root)
    if not (root / "Dockerfile").is_file():
        raise InputError(
            f"No Dockerfile in {root}: pass --source a newsclf project directory, or leave --source out "
            "to build the installed newsclf"
        )
    files = source_files(root)
    out = Path(dest_dir) / "source.tar.gz"
    with open(out, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
            with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for rel in files:
                    info = _tarinfo(root, rel)
                    if info.isreg():
                        with open(root / rel, "rb") as f:
                            tar.addfile(info, f)
                    else:
                        tar.addfile(info)
    digest = hashlib.sha256()
    with open(out, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return PackedSource(path=out, sha256=digest.hexdigest(), size=out.stat().st_size, files=files)


# --- what to build: a project directory, or the installed newsclf ---------------------------------

BUILD_FILES_DIR = "_build"  # in the installed package: the wheel's copy of what the image build needs
# pyproject.toml's [tool.hatch.build.targets.wheel.force-include] puts these in newsclf/_build/; README.md
# because pyproject.toml names it as the readme, without which `uv sync` in the image cannot build newsclf
BUILD_FILES = ("Dockerfile", ".dockerignore", "pyproject.toml", "uv.lock", "README.md", "docker")
_VERSION_LINE = re.compile(r"""^__version__\s*=\s*["']([^"']+)["']""", re.MULTILINE)


@dataclass
class BuildContext:
    """The directory `cloud build` packs, and what the log calls it."""

    root: Path
    label: str


def installed_context(dest: Path, package: Path | None = None) -> BuildContext:
    """The build context of the installed newsclf: the build files its wheel carries (newsclf/_build/)
    staged at `dest`'s root and the package itself as `dest`/newsclf/, so the image is built from the
    very code that runs this. An editable install is its checkout: that directory, as it is."""
    if package is None:
        import newsclf

        package = Path(newsclf.__file__).resolve().parent
    carried = package / BUILD_FILES_DIR
    version = _version_in(package / "__init__.py") or "?"
    if not (carried / "Dockerfile").is_file():
        checkout = package.parent
        if (checkout / "Dockerfile").is_file() and (checkout / "uv.lock").is_file():
            return BuildContext(checkout, f"{checkout} (newsclf {version}, installed from this checkout)")
        raise InputError(
            f"The installed newsclf {version} carries no build files (no {BUILD_FILES_DIR}/Dockerfile in "
            f"{package}): reinstall it from a newsclf checkout (`pipx install --force .`) or its wheel, or "
            "pass --source a newsclf project directory"
        )
    missing = [name for name in BUILD_FILES if not (carried / name).exists()]
    if missing:
        raise InputError(
            f"The installed newsclf {version} lacks {', '.join(missing)} in {carried}: reinstall it from a "
            "newsclf checkout (`pipx install --force .`) or its wheel, or pass --source a newsclf project directory"
        )
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name in BUILD_FILES:
        src = carried / name
        if src.is_dir():
            shutil.copytree(src, dest / name, symlinks=True)
        else:
            shutil.copy2(src, dest / name)
    # the package minus its copy of the build files (they are at the root now) and any bytecode
    shutil.copytree(
        package, dest / "newsclf", symlinks=True,
        ignore=lambda d, names: [n for n in names if n == "__pycache__" or (Path(d) == package and n == BUILD_FILES_DIR)],
    )
    return BuildContext(dest, f"the installed newsclf {version} ({package})")


def _version_in(init: Path) -> str | None:
    try:
        m = _VERSION_LINE.search(init.read_text(encoding="utf-8"))
    except OSError:
        return None
    return m.group(1) if m else None


def project_version(root: Path) -> str | None:
    """The newsclf version of the project at `root`: newsclf/__init__.py's __version__ (the line
    hatch reads for the package's version), or None when there is none."""
    return _version_in(Path(root) / "newsclf" / "__init__.py")


def version_tag(version: str) -> str:
    """The image tag for a build of newsclf `version` (a Docker tag: [A-Za-z0-9_.-], at most 128)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", version)[:128]


# --- settings → names ---------------------------------------------------------------------------


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


def is_local_endpoint(endpoint: str | None) -> bool:
    """An http:// or localhost endpoint is a stand-in or emulator: no Google credentials there."""
    if not endpoint:
        return False
    host = re.sub(r"^[a-z]+://", "", endpoint).split("/", 1)[0].rsplit(":", 1)[0]
    return endpoint.startswith("http://") or host in ("localhost", "127.0.0.1", "[::1]")


def resolve_project(settings: Settings, project: str | None = None) -> str:
    """--project, else NEWSCLF_GCP_PROJECT, else the Application Default Credentials' project."""
    project = project or settings.gcp_project
    if not project and not is_local_endpoint(settings.cloudbuild_api_endpoint):
        from newsclf.cloud.storage import check_credentials_file

        check_credentials_file()  # a broken key file is that, not a missing project
        try:
            import google.auth

            _, project = google.auth.default()
        except Exception:  # no ADC at all: the message below names the setting
            project = None
    if not project:
        raise ConfigError("No Google Cloud project set: set NEWSCLF_GCP_PROJECT or pass --project")
    return project


# --- the image `cloud run` starts, checked before any VM is paid for ------------------------------

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
            from newsclf.cloud.setup import artifactregistry_client

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
    raise CloudError(f"No training image for newsclf {version} in {repo} ({image}): build it with `newsclf cloud build`")


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
    from newsclf.cloud.setup import _api_failure

    answer = _api_failure(
        e, title="Artifact Registry API", service="artifactregistry.googleapis.com", project=project,
        what=f"read the image {image}", role="roles/artifactregistry.reader", member="user:YOU@example.com",
        endpoint=settings.artifactregistry_api_endpoint, endpoint_setting="NEWSCLF_ARTIFACTREGISTRY_API_ENDPOINT",
    )  # fmt: skip
    return CloudError(answer[1]) if answer is not None else e


# --- clients and their errors -------------------------------------------------------------------


def cloudbuild_client(settings: Settings) -> Any:
    """A CloudBuildClient over REST; NEWSCLF_CLOUDBUILD_API_ENDPOINT points it elsewhere."""
    from google.api_core.client_options import ClientOptions
    from google.cloud.devtools import cloudbuild_v1

    endpoint = settings.cloudbuild_api_endpoint
    options = ClientOptions(api_endpoint=endpoint) if endpoint else None  # keeps an http:// scheme
    credentials = None
    if is_local_endpoint(endpoint):
        from google.auth.credentials import AnonymousCredentials

        credentials = AnonymousCredentials()
    try:
        return cloudbuild_v1.CloudBuildClient(credentials=credentials, client_options=options, transport="rest")
    except Exception as e:
        raise _translate(e, settings, project=settings.gcp_project or "?") from e


def _translate(e: BaseException, settings: Settings, project: str) -> BaseException:
    """A CloudError naming the fix for the failures people can fix; other errors unchanged."""
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exc

    if isinstance(e, CloudError):
        return e
    if isinstance(e, (auth_exc.DefaultCredentialsError, auth_exc.RefreshError, gexc.Unauthenticated)):
        from newsclf.cloud.storage import translate

        return translate(e, bucket=settings.bucket or "") or e  # the same words as every cloud command
    text = str(getattr(e, "message", "") or e)
    if isinstance(e, gexc.PermissionDenied | gexc.Forbidden):
        if getattr(e, "reason", None) == "SERVICE_DISABLED" or "has not been used in project" in text:
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
    try:
        import requests

        if isinstance(e, requests.exceptions.ConnectionError):
            where = settings.cloudbuild_api_endpoint or "cloudbuild.googleapis.com"
            return CloudError(
                f"Cannot reach Cloud Build at {where}: check the network or NEWSCLF_CLOUDBUILD_API_ENDPOINT"
            )
    except ImportError:  # pragma: no cover - requests ships with google-auth's transport
        pass
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
    from newsclf.cloud import storage

    b = client.bucket(bucket)
    try:
        if b.get_blob(packed.object_name, retry=storage.retry_policy()) is not None:
            return False
    except Exception as e:
        raise (storage.translate(e, bucket, "list") or e) from e
    # create-only: a concurrent upload of the same bytes counts as done, as the name is their hash
    storage.upload_file(client, b, packed.path, packed.object_name, if_generation_match=0)
    return True


def build_request(*, bucket: str, object_name: str, image: str, tag: str, version: str | None = None) -> Any:
    """The Cloud Build `Build`: one docker build step on a worker big enough for the image; the
    images (source hash, newsclf version, latest) are pushed when it succeeds."""
    from google.cloud.devtools import cloudbuild_v1
    from google.protobuf import duration_pb2

    tags = [tag, *([version_tag(version)] if version else []), "latest"]
    tagged = [f"{image}:{t}" for t in tags]
    return cloudbuild_v1.Build(
        source=cloudbuild_v1.Source(
            storage_source=cloudbuild_v1.StorageSource(bucket=bucket, object_=object_name)
        ),
        steps=[
            cloudbuild_v1.BuildStep(
                name=DOCKER_BUILDER, args=["build", *[a for t in tagged for a in ("-t", t)], "."]
            )
        ],
        images=tagged,
        tags=BUILD_TAGS,
        logs_bucket=f"gs://{bucket}/{LOGS_PREFIX}",
        timeout=duration_pb2.Duration(seconds=BUILD_TIMEOUT_S),
        options=cloudbuild_v1.BuildOptions(
            machine_type=BUILD_MACHINE, disk_size_gb=BUILD_DISK_GB  # proto-plus takes an enum's name
        ),
    )


class LogTail:
    """Reads what was appended to a growing log object since the last read (ranged GETs), and
    hands back complete lines: 404 = not started yet, 416 = nothing new."""

    def __init__(self, bucket: Any, name: str) -> None:
        self.bucket = bucket
        self.name = name
        self.offset = 0
        self._partial = b""

    def read(self, final: bool = False) -> list[str]:
        from google.api_core import exceptions as gexc

        # a fresh Blob each time: a used one pins the generation it saw, and the log is rewritten
        blob = self.bucket.blob(self.name)
        try:
            data = blob.download_as_bytes(start=self.offset, checksum=None)
        except (gexc.NotFound, gexc.RequestRangeNotSatisfiable):
            data = b""
        except Exception as e:
            if not _transient(e):
                from newsclf.cloud.storage import translate

                raise (translate(e, self.bucket.name, "read", self.name) or e) from e
            data = b""  # a network blip: the next poll reads from the same offset
        self.offset += len(data)
        chunks = (self._partial + data).split(b"\n")
        self._partial = chunks.pop()
        if final and self._partial:
            chunks.append(self._partial)
            self._partial = b""
        return [c.decode("utf-8", errors="replace").rstrip("\r") for c in chunks]


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


def _transient(e: BaseException) -> bool:
    """Errors worth waiting out while following a long build (the build itself goes on)."""
    import requests
    from google.api_core import exceptions as gexc

    return isinstance(
        e,
        (gexc.ServiceUnavailable, gexc.InternalServerError, gexc.TooManyRequests, gexc.DeadlineExceeded,
         gexc.RetryError, requests.exceptions.ConnectionError, requests.exceptions.Timeout),
    )


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
    from newsclf.cloud.storage import require_bucket, storage_client

    project = resolve_project(settings, project)
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
            len(packed.files), _human(packed.size), context.label, packed.sha256[:12],
        )
        if version is None:
            log.warning(
                "No newsclf version in %s/newsclf/__init__.py: the image gets no version tag, so "
                "`newsclf cloud run` will not find it (pass --image)", context.root,
            )
        if packed.size > BIG_SOURCE_BYTES:
            log.warning(
                "The source archive is %s: add large files to .dockerignore to keep builds fast",
                _human(packed.size),
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

    last_ok = time.monotonic()
    while True:
        try:
            build = client.get_build(project_id=project, id=result.build_id)
            last_ok = time.monotonic()
        except Exception as e:
            if _transient(e) and time.monotonic() - last_ok < TRANSIENT_GRACE_S:
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


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"  # pragma: no cover
