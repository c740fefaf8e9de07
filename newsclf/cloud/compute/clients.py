"""The compute_v1 clients `cloud run/status/logs/stop` use, and the Cloud Storage client beside them.

`make_clients(settings)` builds the real ones, honouring NEWSCLF_COMPUTE_API_ENDPOINT (anonymous for
a local stand-in) and STORAGE_EMULATOR_HOST; tests pass real clients pointed at stand-ins.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from newsclf.cloud.google.credentials import CLOUD_PLATFORM_SCOPE, default_credentials
from newsclf.cloud.google.endpoints import client_kwargs, is_local_endpoint

if TYPE_CHECKING:
    from newsclf.config import Settings


@dataclass
class Clients:
    """The API clients the compute modules use; tests pass real clients pointed at local stand-ins."""

    instances: Any  # compute_v1.InstancesClient
    operations: Any  # compute_v1.ZoneOperationsClient
    images: Any  # compute_v1.ImagesClient
    storage: Any = None  # google.cloud.storage.Client, built on first use when None
    settings: Any = None
    machine_types: Any = None  # compute_v1.MachineTypesClient: which zones offer a machine type
    accelerator_types: Any = None  # compute_v1.AcceleratorTypesClient: which zones offer a GPU
    disks: Any = None  # compute_v1.DisksClient: grow a reused VM's boot disk

    def storage_client(self) -> Any:
        if self.storage is None:
            self.storage = _storage_client(self.settings)
        return self.storage


def make_clients(settings: Settings) -> Clients:
    """Compute clients for settings.compute_api_endpoint (anonymous for a local stand-in), else ADC."""
    from google.cloud import compute_v1

    endpoint = settings.compute_api_endpoint
    credentials = None if is_local_endpoint(endpoint) else default_credentials([CLOUD_PLATFORM_SCOPE])[0]
    kwargs = client_kwargs(endpoint, credentials)
    return Clients(
        instances=compute_v1.InstancesClient(**kwargs),
        operations=compute_v1.ZoneOperationsClient(**kwargs),
        images=compute_v1.ImagesClient(**kwargs),
        settings=settings,
        machine_types=compute_v1.MachineTypesClient(**kwargs),
        accelerator_types=compute_v1.AcceleratorTypesClient(**kwargs),
        disks=compute_v1.DisksClient(**kwargs),
    )


def _storage_client(settings: Settings | None) -> Any:
    from newsclf.cloud.storage.client import storage_client
    from newsclf.config import get_settings

    return storage_client(settings or get_settings())


def wait_operation(clients: Clients, project: str, zone: str, op: Any, *, timeout_s: float = 900) -> Any:
    """Wait for a zone operation on the clients' own endpoint (see google/operations.py)."""
    from newsclf.cloud.google.operations import wait_zone_operation

    return wait_zone_operation(clients.operations, project, zone, op, timeout_s=timeout_s)


def zones_client(settings: Settings, credentials: Any = None) -> Any:
    """A compute_v1.ZonesClient honouring NEWSCLF_COMPUTE_API_ENDPOINT (`cloud setup` checks the zone)."""
    from google.cloud import compute_v1

    return compute_v1.ZonesClient(**client_kwargs(settings.compute_api_endpoint, credentials))
