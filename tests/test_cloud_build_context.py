"""What `newsclf cloud build` sends: the source archive (deterministic, honouring .dockerignore and
.gcloudignore) and, without --source, the installed newsclf with the build files its wheel carries."""

from __future__ import annotations

import gzip
import hashlib
import os
import tarfile

import pytest

from newsclf.cloud.cloudbuild import context as build_context
from newsclf.cloud.cloudbuild import source as build_source
from newsclf.cloud.cloudbuild.ignore import DockerIgnore, GitIgnore
from newsclf.cloud.cloudbuild.source import pack_source, source_files
from newsclf.errors import InputError
from tests.test_cloud_build import IMAGE, PACKED, TREE, make_tree, project, standin  # noqa: F401  (fixtures)

# --- the source archive --------------------------------------------------------------------------


def test_archive_is_deterministic_and_honours_the_ignore_files(tmp_path):
    a = make_tree(tmp_path / "a")
    first = pack_source(a, tmp_path)
    sha1, size1 = first.sha256, first.size
    assert first.files == PACKED

    # the same tree elsewhere, with other mtimes, permissions and creation order: same bytes
    b = tmp_path / "b"
    for rel in reversed(sorted(TREE)):
        (b / rel).parent.mkdir(parents=True, exist_ok=True)
        (b / rel).write_text(TREE[rel])
    (b / "docker" / "run.sh").chmod(0o700)  # executable for the owner only: still 0755 inside
    (b / "pyproject.toml").chmod(0o600)
    os.utime(b / "uv.lock", (1_000_000_000, 1_000_000_000))
    out = tmp_path / "out"
    out.mkdir()
    second = pack_source(b, out)
    assert (second.sha256, second.size) == (sha1, size1)

    raw = second.path.read_bytes()
    assert raw[4:8] == b"\0\0\0\0"  # gzip header mtime
    with tarfile.open(second.path) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == PACKED
        assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in members} == {
            (build_source.SOURCE_MTIME, 0, 0, "", "")
        }
        modes = {m.name: m.mode for m in members}
        assert modes["docker/run.sh"] == 0o755 and modes["pyproject.toml"] == 0o644
        assert tar.extractfile("newsclf/__init__.py").read() == b"__version__ = '0'\n"
    assert hashlib.sha256(gzip.decompress(raw)).hexdigest()  # a valid gzip stream

    # an ignored file's change leaves the archive alone; a packed file's change does not
    (b / "data" / "raw" / "Fake.csv").write_text("other")
    assert pack_source(b, out).sha256 == sha1
    (b / "uv.lock").write_text("version = 2\n")
    assert pack_source(b, out).sha256 != sha1


def test_archive_keeps_symlinks_as_links(tmp_path):
    root = make_tree(tmp_path / "src")
    os.symlink("newsclf", root / "alias")
    packed = pack_source(root, tmp_path)
    with tarfile.open(packed.path) as tar:
        link = tar.getmember("alias")
        assert link.issym() and link.linkname == "newsclf"


@pytest.mark.parametrize(
    "patterns, path, excluded",
    [
        (["data"], "data", True),
        (["data"], "data/raw/Fake.csv", True),  # a matched parent excludes what is below
        (["data"], "sub/data", False),  # anchored at the context root
        (["/data/"], "data/x", True),  # leading and trailing slashes are cleaned
        (["*.pyc"], "a.pyc", True),
        (["*.pyc"], "pkg/a.pyc", False),  # `*` stays inside one directory
        (["**/*.pyc"], "pkg/sub/a.pyc", True),
        (["**/__pycache__"], "__pycache__/x", True),
        (["**/__pycache__"], "a/b/__pycache__/x.pyc", True),
        (["docs/**"], "docs/a/b.md", True),
        (["*.md", "!README.md"], "README.md", False),  # the last matching rule wins
        (["*.md", "!README.md"], "NOTES.md", True),
        (["!README.md", "*.md"], "README.md", True),
        ([".env", ".env.*"], ".env.local", True),
        (["# a comment", "data"], "# a comment", False),
        (["te?t"], "test", True),
        (["[a-c]at"], "bat", True),
        (["[a-c]at"], "rat", False),
    ],
)
def test_dockerignore_matches_like_docker(patterns, path, excluded):
    assert DockerIgnore(patterns).excluded(path) is excluded


def test_dockerignore_reinclusion_below_an_excluded_directory(tmp_path):
    make_tree(tmp_path, {"Dockerfile": "", "models/a/w.bin": "", "models/keep/config.json": "", "x.txt": ""})
    (tmp_path / ".dockerignore").write_text("models\n!models/keep\n")
    assert source_files(tmp_path) == [".dockerignore", "Dockerfile", "models/keep/config.json", "x.txt"]


@pytest.mark.parametrize(
    "patterns, path, is_dir, excluded",
    [
        (["*.log"], "deep/down/x.log", False, True),  # no slash: any depth
        (["notes/"], "notes", True, True),
        (["notes/"], "notes", False, False),  # dir-only
        (["/root.txt"], "root.txt", False, True),
        (["/root.txt"], "sub/root.txt", False, False),
        (["a/b"], "x/a/b", False, False),  # a slash in the middle anchors too
        (["a/**/b"], "a/x/y/b", False, True),
        (["*.log", "!keep.log"], "keep.log", False, False),
        (["\\#hash"], "#hash", False, True),
    ],
)
def test_gcloudignore_matches_like_gitignore(patterns, path, is_dir, excluded):
    assert GitIgnore(patterns).excluded(path, is_dir) is excluded


# --- the installed newsclf as the build context ---------------------------------------------------

CHECKOUT = __import__("pathlib").Path(__file__).resolve().parents[1]


def installed_package(site):
    """What a wheel install leaves in site-packages: the package, its _build/ files, some bytecode."""
    pkg = site / "newsclf"
    make_tree(pkg, {
        "__init__.py": "__version__ = '2.3.4'\n", "cli/__init__.py": "", "cloud/startup.sh": "#!/bin/bash\n",
        "__pycache__/__init__.cpython-311.pyc": "junk",
        "_build/Dockerfile": TREE["Dockerfile"], "_build/.dockerignore": TREE[".dockerignore"],
        "_build/pyproject.toml": TREE["pyproject.toml"], "_build/uv.lock": TREE["uv.lock"],
        "_build/README.md": "# newsclf\n", "_build/docker/run.sh": TREE["docker/run.sh"],
    })  # fmt: skip
    return pkg


def test_installed_context_stages_the_package_with_the_build_files_it_carries(tmp_path):
    pkg = installed_package(tmp_path / "site")
    context = build_context.installed_context(tmp_path / "ctx", package=pkg)
    assert context.label == f"the installed newsclf 2.3.4 ({pkg})"
    packed = pack_source(context.root, tmp_path)
    assert packed.files == [
        ".dockerignore", "Dockerfile", "README.md", "docker/run.sh", "newsclf/__init__.py",
        "newsclf/cli/__init__.py", "newsclf/cloud/startup.sh", "pyproject.toml", "uv.lock",
    ]  # fmt: skip
    assert build_context.project_version(context.root) == "2.3.4"
    # the same installed files staged again give the same archive
    again = build_context.installed_context(tmp_path / "ctx2", package=pkg)
    out = tmp_path / "out"
    out.mkdir()
    assert pack_source(again.root, out).sha256 == packed.sha256


def test_an_install_without_build_files_names_the_fix(tmp_path):
    pkg = installed_package(tmp_path / "site")
    (pkg / "_build" / "uv.lock").unlink()
    with pytest.raises(InputError) as e:
        build_context.installed_context(tmp_path / "ctx", package=pkg)
    assert str(e.value) == (
        f"The installed newsclf 2.3.4 lacks uv.lock in {pkg / '_build'}: reinstall it from a newsclf checkout "
        "(`pipx install --force .`) or its wheel, or pass --source a newsclf project directory"
    )
    for name in ("Dockerfile",):
        (pkg / "_build" / name).unlink()
    with pytest.raises(InputError, match=r"^The installed newsclf 2.3.4 carries no build files"):
        build_context.installed_context(tmp_path / "ctx", package=pkg)


def test_build_without_source_packs_the_installed_newsclf_from_anywhere(cli, project, gcs, standin, monkeypatch):
    """Here newsclf is installed editable from this checkout: that checkout is what gets built, whatever
    the current directory holds (this test's directory has a Dockerfile of its own)."""
    r = cli("cloud", "build", "--no-wait")
    assert r.exit_code == 0, r.stderr
    [body] = standin.create_bodies()
    obj = body["source"]["storageSource"]["object"]
    import io

    with tarfile.open(fileobj=io.BytesIO(gcs.bucket(gcs.test_bucket).blob(obj).download_as_bytes())) as tar:
        names = set(tar.getnames())
        assert tar.extractfile("uv.lock").read() == (CHECKOUT / "uv.lock").read_bytes()
    assert {"Dockerfile", "uv.lock", "pyproject.toml", "README.md", "newsclf/cli/cloud.py"} <= names
    assert "data/raw/Fake.csv" not in names and not any(n.startswith("tests/") for n in names)
    from newsclf import __version__

    assert f"{IMAGE}:{__version__}" in body["images"]
    assert f"of {CHECKOUT} (newsclf {__version__}, installed from this checkout)" in r.stderr


def test_the_image_build_context_holds_what_the_wheel_force_includes():
    """The image's `uv sync` builds newsclf's wheel from the build context: hatch fails on a
    force-included file the context left out, and `cloud build` of an installed newsclf needs them all."""
    import tomllib

    forced = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["wheel"][
        "force-include"
    ]
    assert {v.removeprefix("newsclf/_build/") for v in forced.values()} == set(build_context.BUILD_FILES)
    context = source_files(CHECKOUT)
    for src in forced:
        assert src in context or any(f.startswith(src + "/") for f in context), src
