"""Zone failover: only the zones the Compute API says offer the machine type and GPUs are tried."""

from __future__ import annotations

from tests.compute_standin import (  # noqa: F401  (fixtures)
    SCRIPT,
    VM,
    ZONE,
    FakeVM,
    insert_bodies,
    last_line,
    meta_items,
    standin,
)

PROJECT = "test-project"
POLL = ("--poll-interval", "0.05")


def test_zone_failover_on_operation_and_http_errors(cli, standin):
    standin.fail("POST", f"zones/{ZONE}/instances$", "capacity", via="operation")
    standin.fail("POST", "zones/europe-west1-c/instances$", "quota")
    r = cli("--json", "cloud", "run", "--detach", "--gpu", "nvidia-tesla-t4:1")
    assert r.exit_code == 0, r.stderr
    assert r.json["data"]["zone"] == "europe-west1-d"
    assert [c.path.split("/")[6] for c in standin.calls("POST", r"/instances$")] == [
        "europe-west1-b",
        "europe-west1-c",
        "europe-west1-d",
    ]
    body = insert_bodies(standin)[-1]
    assert body["guestAccelerators"][0]["acceleratorType"] == (
        f"projects/{PROJECT}/zones/europe-west1-d/acceleratorTypes/nvidia-tesla-t4"
    )
    # which zones offer them: one aggregated list per type, filtered by name
    [machines] = standin.calls("GET", "/aggregated/machineTypes$")
    [gpus] = standin.calls("GET", "/aggregated/acceleratorTypes$")
    assert (machines.query["filter"], gpus.query["filter"]) == ('name = "n1-standard-8"', 'name = "nvidia-tesla-t4"')
    assert "No room in europe-west1-b (ZONE_RESOURCE_POOL_EXHAUSTED); trying the next zone" in r.stderr
    assert "No room in europe-west1-c (quotaExceeded); trying the next zone" in r.stderr
    assert standin.instance(VM, "europe-west1-d").status == "RUNNING"


def test_zone_failover_gives_up_with_one_line(cli, standin, monkeypatch):
    monkeypatch.setenv("NEWSCLF_ZONES", "europe-west1-c,europe-west4-a")
    standin.fail("POST", f"zones/{ZONE}/instances$", "capacity_details", via="http")
    standin.fail("POST", "zones/europe-west1-c/instances$", "capacity", via="operation")
    standin.fail("POST", "zones/europe-west4-a/instances$", "quota", via="operation")
    r = cli("cloud", "run", "--detach")
    assert r.exit_code == 1
    assert last_line(r.stderr) == (
        "Error: No zone could take n1-standard-8: tried europe-west1-b (ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS), "
        "europe-west1-c (ZONE_RESOURCE_POOL_EXHAUSTED), europe-west4-a (QUOTA_EXCEEDED); "
        "request more quota (console: IAM & Admin > Quotas) or pick another --zone/--gpu"
    )
    assert standin.instances == {}


def test_permission_denied_is_not_a_capacity_error(cli, standin):
    standin.fail("POST", f"zones/{ZONE}/instances$", "forbidden")
    r = cli("cloud", "run", "--detach")
    assert r.exit_code == 1
    assert last_line(r.stderr) == (
        "Error: Permission denied to create the VM in project test-project: Required 'compute.instances.create' "
        "permission; grant your account roles/compute.instanceAdmin.v1 and roles/iam.serviceAccountUser, "
        "or check NEWSCLF_GCP_PROJECT"
    )
    assert len(standin.calls("POST", r"/instances$")) == 1  # no failover


def insert_zones(standin):
    return [c.path.split("/")[6] for c in standin.calls("POST", r"/instances$")]


def test_us_central1_fails_over_to_zone_f_never_a_guessed_d(cli, standin):
    for zone in ("us-central1-a", "us-central1-b", "us-central1-c"):
        standin.fail("POST", f"zones/{zone}/instances$", "capacity", via="operation")
    r = cli("--json", "cloud", "run", "--detach", "--zone", "us-central1-a", "--gpu", "nvidia-tesla-t4:1")
    assert r.exit_code == 0, r.stderr
    assert r.json["data"]["zone"] == "us-central1-f"
    assert insert_zones(standin) == ["us-central1-a", "us-central1-b", "us-central1-c", "us-central1-f"]


def test_a_gpu_offered_in_some_zones_is_tried_only_there(cli, standin):
    # L4 (g2-standard-8) is in europe-west1-b and -c, not -d: -d is skipped without asking
    standin.fail("POST", "zones/europe-west1-c/instances$", "capacity", via="operation")
    r = cli("cloud", "run", "--detach", "--zone", "europe-west1-c", "--machine-type", "g2-standard-8")
    assert r.exit_code == 0, r.stderr
    assert insert_zones(standin) == ["europe-west1-c", "europe-west1-b"]


def test_a_zone_without_the_hardware_is_skipped_and_giving_up_names_only_real_zones(cli, standin):
    standin.fail("POST", "zones/europe-west1-b/instances$", "capacity", via="operation")
    standin.fail("POST", "zones/europe-west1-c/instances$", "capacity", via="operation")
    r = cli("cloud", "run", "--detach", "--zone", "europe-west1-d", "--machine-type", "g2-standard-8")
    assert r.exit_code == 1
    assert "europe-west1-d does not offer g2-standard-8; trying europe-west1-b, europe-west1-c" in r.stderr
    assert last_line(r.stderr) == (
        "Error: No zone could take g2-standard-8: tried europe-west1-b (ZONE_RESOURCE_POOL_EXHAUSTED), "
        "europe-west1-c (ZONE_RESOURCE_POOL_EXHAUSTED); retry later, use --spot or another --gpu/--machine-type, "
        "or list other zones in NEWSCLF_ZONES"
    )
    assert insert_zones(standin) == ["europe-west1-b", "europe-west1-c"]


def test_no_zone_of_the_region_offers_it_fails_before_any_vm(cli, standin):
    r = cli("cloud", "run", "--detach", "--machine-type", "a2-highgpu-1g")  # A100: none in europe-west1
    assert r.exit_code == 1
    assert last_line(r.stderr) == (
        "Error: No zone of europe-west1 offers a2-highgpu-1g: it is offered in europe-west4-a, europe-west4-b, "
        "us-central1-a, us-central1-b, us-central1-c, us-central1-f; pick one with --zone (or NEWSCLF_ZONE)"
    )
    assert insert_zones(standin) == []


def test_listed_zones_that_lack_the_hardware_are_skipped(cli, standin, monkeypatch):
    monkeypatch.setenv("NEWSCLF_ZONES", "europe-west1-d,europe-west4-a")
    standin.fail("POST", "zones/europe-west1-b/instances$", "capacity", via="operation")
    r = cli("--json", "cloud", "run", "--detach", "--machine-type", "g2-standard-8")
    assert r.exit_code == 0, r.stderr
    assert insert_zones(standin) == ["europe-west1-b", "europe-west4-a"]
    assert r.json["data"]["zone"] == "europe-west4-a"
