"""The contract checker the REST stand-ins use: it must reject what Google rejects, accept what it accepts."""

from __future__ import annotations

import pytest

from tests.discovery import contract_errors, find_method

INSERT = "/compute/v1/projects/my-project/zones/europe-west1-b/instances"


def _instance(**over):
    body = {
        "name": "newsclf-train",
        "machineType": "zones/europe-west1-b/machineTypes/n1-standard-8",
        "labels": {"newsclf": "1", "newsclf-run": "20261130-174500-ab12"},
        "scheduling": {
            "maxRunDuration": {"seconds": "21600"},
            "instanceTerminationAction": "STOP",
            "provisioningModel": "SPOT",
            "onHostMaintenance": "TERMINATE",
            "automaticRestart": False,
        },
        "guestAccelerators": [
            {
                "acceleratorType": "projects/my-project/zones/europe-west1-b/acceleratorTypes/nvidia-tesla-t4",
                "acceleratorCount": 1,
            }
        ],
    }
    body.update(over)
    return body


def test_routes_find_literal_paths_before_templates():
    assert (
        find_method("compute.v1", "GET", "/compute/v1/projects/p/aggregated/instances")["id"]
        == "compute.instances.aggregatedList"
    )
    assert find_method("compute.v1", "POST", INSERT)["id"] == "compute.instances.insert"
    assert find_method("cloudbuild.v1", "POST", "/v1/projects/p/locations/europe-west1/builds")["id"] == (
        "cloudbuild.projects.locations.builds.create"
    )
    assert find_method("compute.v1", "POST", "/compute/v1/projects/p/zones/z/nothing") is None


def test_valid_instance_passes():
    assert contract_errors("compute.v1", "POST", INSERT, {}, _instance()) == []


@pytest.mark.parametrize(
    ("over", "needle"),
    [
        ({"nmae": "x"}, 'Unknown name "nmae"'),
        ({"name": "My.Run_2"}, "invalid resource name"),
        ({"labels": {"newsclf-run": "My.Run_2"}}, "invalid label value"),
        ({"labels": {"Run": "x"}}, "invalid label key"),
        ({"scheduling": {"maxRunDuration": {"seconds": "10"}, "instanceTerminationAction": "STOP"}}, "outside 30 s"),
        (
            {"scheduling": {"maxRunDuration": {"seconds": str(121 * 86400)}, "instanceTerminationAction": "STOP"}},
            "120 days",
        ),
        ({"scheduling": {"provisioningModel": "CHEAP"}}, "invalid value 'CHEAP'"),
        ({"scheduling": {"onHostMaintenance": "MIGRATE"}}, "must be TERMINATE"),
        ({"canIpForward": "yes"}, "expected a boolean"),
        ({"guestAccelerators": [{"acceleratorCount": "one"}]}, "expected an integer"),
        (
            {
                "guestAccelerators": [
                    {"acceleratorType": "zones/europe-west1-b/acceleratorTypes/nvidia-tesla-t4", "acceleratorCount": 1}
                ]
            },
            "guestAccelerators[0].acceleratorType",
        ),
        ({"guestAccelerators": [{"acceleratorType": "nvidia-tesla-t4", "acceleratorCount": 1}]}, "documented form"),
        (
            {
                "guestAccelerators": [
                    {"acceleratorType": "projects/p/zones/z/acceleratorTypes/t", "acceleratorCount": 0}
                ]
            },
            "at least 1",
        ),
        ({"machineType": "n1-standard-8"}, "machineType: 'n1-standard-8' is not a URL"),
        (
            {"disks": [{"boot": True, "initializeParams": {"diskSizeGb": "5", "diskType": "pd-balanced"}}]},
            "at least 10 GB",
        ),
        ({"disks": [{"boot": True, "initializeParams": {"diskType": "pd-balanced"}}]}, "diskType: 'pd-balanced'"),
        ({"metadata": {"items": [{"key": "a", "value": "x"}, {"key": "a", "value": "y"}]}}, "duplicate key 'a'"),
        ({"metadata": {"items": [{"key": "startup-script", "value": "x" * (256 * 1024 + 1)}]}}, "at most 262144"),
        ({"metadata": {"items": [{"key": "bad key", "value": "x"}]}}, "does not match"),
        ({"scheduling": {"provisioningModel": "SPOT", "automaticRestart": True}}, "cannot restart automatically"),
        ({"scheduling": {"provisioningModel": "SPOT", "onHostMaintenance": "MIGRATE"}}, "can only TERMINATE"),
        ({"scheduling": {"maxRunDuration": {"seconds": "3600"}}}, "required with maxRunDuration"),
    ],
)
def test_invalid_instances_are_rejected(over, needle):
    errors = contract_errors("compute.v1", "POST", INSERT, {}, _instance(**over))
    assert any(needle in e for e in errors), errors


def test_query_enums_and_unknown_methods():
    path = "/compute/v1/projects/p/zones/z/instances/vm/stop"
    assert contract_errors("compute.v1", "POST", path, {"discardLocalSsd": "false"}, None) == []
    assert contract_errors("compute.v1", "POST", path, {"discardLocalSsd": "maybe"}, None)
    assert contract_errors("compute.v1", "PATCH", path, {}, None)[0].startswith("no compute.v1 method")


def test_cloud_build_body():
    path = "/v1/projects/p/locations/europe-west1/builds"
    good = {
        "steps": [{"name": "gcr.io/cloud-builders/docker", "args": ["build", "."]}],
        "options": {"machineType": "E2_HIGHCPU_8", "diskSizeGb": "200"},
        "timeout": "3600s",
    }
    assert contract_errors("cloudbuild.v1", "POST", path, {}, good) == []
    bad = dict(good, options={"machineType": "E2_HUGE"}, timeout="1h")
    errors = contract_errors("cloudbuild.v1", "POST", path, {}, bad)
    assert any("E2_HUGE" in e for e in errors) and any("invalid duration" in e for e in errors), errors


VM = "/compute/v1/projects/my-project/zones/europe-west1-b/instances/newsclf-train"


@pytest.mark.parametrize(
    ("verb", "body", "needle"),
    [
        (
            "setLabels",
            {"labels": {"newsclf-run": "My.Run_2"}, "labelFingerprint": "42WmSpB8rSM="},
            "invalid label value",
        ),
        ("setLabels", {"labels": {"newsclf": "train"}}, "labelFingerprint: required"),
        ("setLabels", {"labels": {"newsclf": "train"}, "labelFingerprint": "not base64!"}, "is not base64"),
        ("setScheduling", {"maxRunDuration": {"seconds": "10"}, "instanceTerminationAction": "STOP"}, "outside 30 s"),
        ("setScheduling", {"maxRunDuration": {"seconds": "3600"}}, "required with maxRunDuration"),
        ("setMachineType", {"machineType": "n1-standard-8"}, "is not a URL"),
        (
            "setMachineResources",
            {"guestAccelerators": [{"acceleratorType": "nvidia-tesla-t4", "acceleratorCount": 1}]},
            "acceleratorType",
        ),
        (
            "setMetadata",
            {"fingerprint": "42WmSpB8rSM=", "items": [{"key": "k", "value": "v" * (256 * 1024 + 1)}]},
            "at most 262144",
        ),
    ],
)
def test_instance_updates_are_checked(verb, body, needle):
    errors = contract_errors("compute.v1", "POST", f"{VM}/{verb}", {}, body)
    assert any(needle in e for e in errors), errors


def test_valid_instance_updates_pass():
    for verb, body in [
        ("setLabels", {"labels": {"newsclf-run": "my-run_2"}, "labelFingerprint": "42WmSpB8rSM="}),
        (
            "setScheduling",
            {
                "maxRunDuration": {"seconds": "3600"},
                "instanceTerminationAction": "STOP",
                "onHostMaintenance": "TERMINATE",
                "automaticRestart": False,
                "provisioningModel": "SPOT",
            },
        ),
        ("setMachineType", {"machineType": "zones/europe-west1-b/machineTypes/n1-standard-4"}),
        ("setMachineResources", {"guestAccelerators": []}),
    ]:
        assert contract_errors("compute.v1", "POST", f"{VM}/{verb}", {}, body) == [], verb
    resize = "/compute/v1/projects/my-project/zones/europe-west1-b/disks/newsclf-train/resize"
    assert contract_errors("compute.v1", "POST", resize, {}, {"sizeGb": "200"}) == []
    assert any("at least 10 GB" in e for e in contract_errors("compute.v1", "POST", resize, {}, {"sizeGb": "5"}))


def test_compute_standin_answers_400_and_records_the_violation(tmp_path):
    """The stand-in behind the real compute_v1 client: what the contract rejects never reaches its state."""
    from google.api_core import exceptions as gexc
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import compute_v1

    from tests.compute_standin import ComputeStandIn

    server = ComputeStandIn(tmp_path)
    try:
        client = compute_v1.InstancesClient(
            client_options=ClientOptions(api_endpoint=server.url), credentials=AnonymousCredentials()
        )
        instance = compute_v1.Instance(
            name="newsclf-train", machine_type="zones/europe-west1-b/machineTypes/n1-standard-8",
            labels={"newsclf-run": "My.Run_2"},
        )  # fmt: skip
        with pytest.raises(gexc.BadRequest, match="invalid label value 'My.Run_2'"):
            client.insert(project="test-project", zone="europe-west1-b", instance_resource=instance)
        [(request, errors)] = server.violations
        assert request.method == "POST" and request.path.endswith("/zones/europe-west1-b/instances")
        assert any("invalid label value" in e for e in errors)
        assert server.instances == {}
    finally:
        server.close()
