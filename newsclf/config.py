"""Settings: flag > environment (NEWSCLF_*) > .env > default."""

from __future__ import annotations

import difflib
import logging
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger(__name__)

ENV_PREFIX = "NEWSCLF_"
ENV_FILE = ".env"

# Ranges of the numeric training options, shared by the settings and the train flags (TrainOptions.validate)
MAX_EPOCHS = 1000.0
MAX_BATCH_SIZE = 4096
MAX_LR = 1.0  # AdamW steps of this size already wreck a pretrained encoder
MIN_MAX_LENGTH = 8
MAX_MAX_LENGTH = 131072  # the base model's own limit (max_position_embeddings) is checked when it is loaded
MAX_PATIENCE = 1000
MAX_SEED = 2**32 - 1  # numpy's seeds stop here
MAX_RUN_HOURS = 24 * 120  # Compute Engine's max_run_duration goes up to 120 days


class Settings(BaseSettings):
    """Everything newsclf can be configured with; `newsclf config show` prints it."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=ENV_FILE,
        env_file_encoding="utf-8",
        env_ignore_empty=True,  # `NEWSCLF_BUCKET=` in .env means unset
        extra="ignore",  # unknown NEWSCLF_* names are reported by unknown_variables()
    )

    # paths
    data_dir: Path = Path("data")  # raw/ and processed/ live under it
    models_dir: Path = Path("models")  # one folder per training run, plus `latest`

    # training defaults (chosen for 2 CPU cores; a GPU is picked up automatically)
    base_model: str = ""  # empty: the packaged all-MiniLM-L6-v2 (offline)
    max_length: int = Field(
        default=128, ge=MIN_MAX_LENGTH, le=MAX_MAX_LENGTH
    )  # tokens kept per article (title first); 128 = 256's F1 at 2x speed (bench/README.md)
    epochs: float = Field(
        default=3.0, gt=0, le=MAX_EPOCHS, allow_inf_nan=False
    )  # upper bound; early stopping usually ends sooner
    batch_size: int = Field(default=16, ge=1, le=MAX_BATCH_SIZE)  # per device
    lr: float = Field(
        default=5e-5, gt=0, le=MAX_LR, allow_inf_nan=False
    )  # small encoders like a higher rate than BERT-base
    weight_decay: float = Field(default=0.01, ge=0, le=1, allow_inf_nan=False)
    warmup_ratio: float = Field(
        default=0.1, ge=0, lt=1, allow_inf_nan=False
    )  # fraction of steps spent warming up the lr
    patience: int = Field(default=2, ge=1, le=MAX_PATIENCE)  # evaluations without macro-F1 gain before stopping
    seed: int = Field(default=42, ge=0, le=MAX_SEED)
    attention_dropout: float = Field(
        default=0.0, ge=0, lt=1, allow_inf_nan=False
    )  # on attention probabilities: 0 = 1.2-1.3x faster CPU steps, same F1 (bench/README.md)
    precision: Literal["auto", "bf16", "fp16", "tf32", "fp32"] = (
        "auto"  # auto|bf16|fp16|tf32|fp32; auto: TF32 on Ampere+ GPUs (fp16 older), bf16 on AMX CPUs, else fp32
    )
    wandb_project: str = "newsclf"
    wandb_entity: str | None = None
    wandb_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("NEWSCLF_WANDB_API_KEY", "WANDB_API_KEY")
    )

    # Google Cloud
    gcp_project: str | None = None  # falls back to the ADC project
    region: str = "europe-west1"
    zone: str = "europe-west1-b"
    zones: str = (
        ""  # comma-separated fallback zones for capacity errors; empty: the zones of the region that offer the hardware
    )
    bucket: str | None = None  # gs://BUCKET holds data/, runs/, builds/
    artifact_repo: str = "newsclf"  # Artifact Registry docker repository
    image: str | None = None  # training image; default REGION-docker.pkg.dev/PROJECT/REPO/newsclf-train
    vm_name: str = "newsclf-train"
    machine_type: str = "n1-standard-8"
    disk_gb: int = Field(
        default=100, ge=10, le=65536
    )  # GB: at least 10 (as `cloud run --disk-gb`), at most a 64 TB disk
    max_hours: float = Field(
        default=6.0, gt=0, le=MAX_RUN_HOURS, allow_inf_nan=False
    )  # the VM stops itself after this long, whatever happens
    vm_image_project: str = "deeplearning-platform-release"
    vm_image_family: str = "common-cu129-ubuntu-2204-nvidia-580"  # driver 580: the CUDA 13 torch needs it
    wandb_secret: str | None = None  # Secret Manager secret holding the W&B key, for VMs
    vm_service_account: str | None = (
        None  # the VMs' service account; default newsclf-vm@PROJECT.iam.gserviceaccount.com
    )
    compute_api_endpoint: str | None = None  # e.g. http://127.0.0.1:8080 for a local stand-in
    batch_api_endpoint: str | None = None  # Cloud Batch (cloud sweeps), e.g. a local stand-in
    cloudbuild_api_endpoint: str | None = None
    artifactregistry_api_endpoint: str | None = None
    iam_api_endpoint: str | None = None  # IAM (service accounts), for `cloud setup`
    resourcemanager_api_endpoint: str | None = None
    secretmanager_api_endpoint: str | None = None

    debug: bool = False  # show tracebacks


SECRET_FIELDS = frozenset({"wandb_api_key"})


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The resolved settings, read once per process (tests call get_settings.cache_clear())."""
    from pydantic import ValidationError

    from newsclf.errors import ConfigError

    try:
        settings = Settings()
    except UnicodeDecodeError as e:
        raise _env_file_not_utf8(e) from None
    except ValidationError as e:
        err = e.errors()[0]
        name = str(err["loc"][0]) if err["loc"] else "?"
        variable = name if name.upper().startswith(ENV_PREFIX) else f"{ENV_PREFIX}{name.upper()}"
        field = Settings.model_fields.get(name.lower())
        shown = "" if name.lower() in SECRET_FIELDS or field is None else f", not {err.get('input')}"
        raise ConfigError(
            f"Invalid setting {variable}: {err['msg'][0].lower()}{err['msg'][1:]}{shown}; "
            f"fix {variable} in the environment or .env"
        ) from None
    for name, close in unknown_variables():
        hint = f"; did you mean {close}?" if close else ""
        log.warning("Unknown setting %s is ignored%s", name, hint)
    return settings


def _env_file_not_utf8(e: UnicodeDecodeError) -> Exception:
    """A ConfigError naming .env and the line with the first byte that is not UTF-8."""
    from newsclf.errors import ConfigError

    where = ""
    try:  # the reader decodes in chunks: find the offset in the whole file
        data = Path(ENV_FILE).read_bytes()
        data.decode("utf-8")
    except UnicodeDecodeError as whole:
        line = data.count(b"\n", 0, whole.start) + 1
        e, where = whole, f" on line {line}"
    except OSError:
        pass
    return ConfigError(
        f"{ENV_FILE} is not UTF-8 (invalid byte 0x{e.object[e.start]:02x}{where}): re-save it as UTF-8, "
        f"e.g. `iconv -f latin1 -t utf-8 {ENV_FILE} > {ENV_FILE}.new && mv {ENV_FILE}.new {ENV_FILE}`"
    )


def _env_names(name: str, field: Any) -> list[str]:
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return [str(c) for c in alias.choices]
    return [ENV_PREFIX + name.upper()]


def _dotenv_values(path: str | os.PathLike[str] = ENV_FILE) -> dict[str, str]:
    from dotenv import dotenv_values

    if not Path(path).is_file():
        return {}
    try:
        values = dotenv_values(path, encoding="utf-8")
    except UnicodeDecodeError as e:
        raise _env_file_not_utf8(e) from None
    return {k.upper(): v for k, v in values.items() if v is not None}


def describe(settings: Settings | None = None) -> list[dict[str, Any]]:
    """Each setting with its value (secrets masked), its variable name and where it came from."""
    settings = settings or get_settings()
    dotenv = _dotenv_values()
    rows = []
    for name, field in Settings.model_fields.items():
        names = _env_names(name, field)
        source = "default"
        for env in names:
            if env in os.environ:
                source = f"env {env}"
                break
            if env in dotenv:
                source = f".env {env}"
                break
        value = getattr(settings, name)
        if name in SECRET_FIELDS:
            value = "********" if value is not None else None
        elif isinstance(value, Path):
            value = str(value)
        rows.append({"name": name, "variable": names[0], "value": value, "source": source})
    return rows


def unknown_variables() -> list[tuple[str, str | None]]:
    """NEWSCLF_* names in the environment or .env that match no setting, with the closest valid one."""
    valid = {ENV_PREFIX + n.upper() for n in Settings.model_fields}
    seen = [k for k in os.environ if k.startswith(ENV_PREFIX)]
    seen += [k for k in _dotenv_values() if k.startswith(ENV_PREFIX) and k not in seen]
    out = []
    for key in sorted(set(seen) - valid):
        close = difflib.get_close_matches(key.upper(), sorted(valid), n=1, cutoff=0.6)
        out.append((key, close[0] if close else None))
    return out
