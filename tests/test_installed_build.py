"""The design card's user: newsclf installed from its wheel (as `pipx install` / `uv tool install` do), run
in an empty directory. `cloud build` packs the installed package with the build files the wheel carries,
and `cloud run` starts only the image built for its own version. The installed `newsclf` runs as a
subprocess against the Cloud Build, Artifact Registry and Compute stand-ins and fake-gcs-server."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
from pathlib import Path

import pytest

from newsclf import __version__
from tests.cloudbuild_standin import CloudBuildStandIn
from tests.compute_standin import standin  # noqa: F401  (fixture; `.registry`: the Artifact Registry stand-in)

pytestmark = pytest.mark.slow

CHECKOUT = Path(__file__).resolve().parents[1]
BUCKET = "my-newsclf-bucket"
IMAGE = "europe-west1-docker.pkg.dev/test-project/newsclf/newsclf-train"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A venv holding newsclf installed from a freshly built wheel (no checkout on its path); the
    dependencies come from this project's venv, offline, appended after the venv's own site-packages."""
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv not on PATH: it builds and installs the wheel")
    root = tmp_path_factory.mktemp("installed")
    subprocess.run([uv, "build", "--wheel", "--offline", "-o", str(root / "dist"), str(CHECKOUT)],
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    [wheel] = (root / "dist").glob("newsclf-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run([uv, "pip", "install", "--offline", "--no-deps", "--python", str(python), str(wheel)],
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # a .pth line only appends its directory: the dev venv's editable newsclf (its own .pth) stays out
    Path(site, "zz_newsclf_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    where = subprocess.run([str(python), "-c", "import newsclf; print(newsclf.__file__)"], cwd=root,
                           check=True, capture_output=True, text=True).stdout.strip()  # fmt: skip
    assert where.startswith(site), f"newsclf imported from {where}, not the installed wheel"
    return venv


@pytest.fixture
def cloud(standin, fake_gcs, tmp_path, monkeypatch):  # noqa: F811
    """Every service local; a bucket named as a user names it, with a dataset; an empty directory."""
    registry = standin.registry
    registry.tags.clear()  # nothing built yet
    builds = CloudBuildStandIn(fake_gcs.url, build_s=1.0, registry=registry)
    gcs = standin.gcs
    bucket = gcs.lookup_bucket(BUCKET) or gcs.create_bucket(BUCKET)
    bucket.blob("data/processed/manifest.json").upload_from_string("{}")
    monkeypatch.setenv("NEWSCLF_BUCKET", BUCKET)
    monkeypatch.setenv("NEWSCLF_CLOUDBUILD_API_ENDPOINT", builds.url)
    empty = tmp_path / "empty"
    empty.mkdir()
    yield builds, bucket, empty
    builds.stop()


def newsclf(venv: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(venv / "bin" / "newsclf"), *args],
        cwd=cwd,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_installed_newsclf_builds_its_image_and_runs_only_that_version(installed, cloud, standin):  # noqa: F811
    builds, bucket, empty = cloud

    # no image yet: `cloud run` stops before any VM, naming `cloud build`
    r = newsclf(installed, empty, "cloud", "run", "--detach", "--poll-interval", "0.05")
    assert r.returncode == 1, r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        f"Error: No training image for newsclf {__version__} in europe-west1-docker.pkg.dev/test-project/newsclf "
        f"({IMAGE}:{__version__}): build it with `newsclf cloud build`"
    )
    assert standin.requests == []

    # `cloud build` in an empty directory: the installed package and the build files its wheel carries
    r = newsclf(installed, empty, "cloud", "build")
    assert r.returncode == 0, r.stderr
    assert list(empty.iterdir()) == []  # nothing written where it ran
    [body] = builds.create_bodies()
    obj = body["source"]["storageSource"]["object"]
    with tarfile.open(fileobj=io.BytesIO(bucket.blob(obj).download_as_bytes())) as tar:
        names = set(tar.getnames())
        for name in ("Dockerfile", "uv.lock", "pyproject.toml", "README.md", ".dockerignore", "docker/check_image.py"):
            assert name in names, name
            assert tar.extractfile(name).read() == (CHECKOUT / name).read_bytes(), name
        for name in ("newsclf/__init__.py", "newsclf/cli/cloud.py", "newsclf/cloud/startup.sh"):
            assert name in names, name
            assert tar.extractfile(name).read() == (CHECKOUT / name).read_bytes(), name
        assert not [n for n in names if n.startswith("newsclf/_build") or "__pycache__" in n or n.startswith("tests/")]
    assert f"{IMAGE}:{__version__}" in body["images"]
    assert f"of the installed newsclf {__version__} (" in r.stderr
    assert r.stdout.splitlines()[1].startswith(f"Tagged  {IMAGE}:{__version__} ")

    # the build pushed the image tagged with this version: now `cloud run` starts a VM that pulls it
    r = newsclf(installed, empty, "--json", "cloud", "run", "--detach", "--poll-interval", "0.05")
    assert r.returncode == 0, r.stderr
    [insert] = standin.calls("POST", r"/instances$")
    items = {i["key"]: i["value"] for i in insert.body["metadata"]["items"]}
    assert items["newsclf-image"] == f"{IMAGE}:{__version__}"
