"""The training VMs' service account, and the least-privilege roles it gets on the bucket, the repository,
the W&B secret and the project (log writing); and whether you may run VMs as it."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

from newsclf.cloud.google.errors import (
    ARTIFACTREGISTRY,
    IAM,
    RESOURCEMANAGER,
    SECRETMANAGER,
    grant_command,
    reasons,
    short,
)
from newsclf.cloud.setup.context import (
    CALL_TIMEOUT_S,
    Context,
    api_answer,
    member_of,
    projects_client,
    secrets_client,
    storage_of,
)
from newsclf.cloud.setup.report import CREATED, ERROR, MISSING, OK, SKIPPED

log = logging.getLogger(__name__)

# A new service account takes a while to be known to the services that grant roles on resources
# ("Service account ... does not exist"): grants to a just-created account are retried this long.
PROPAGATION_S = 120.0
PROPAGATION_STEP_S = 2.0  # first wait; doubles up to 15 s
POLICY_ATTEMPTS = 3  # read-modify-write rounds when someone else changed the policy in between (etag)


def _iam_failure(ctx: Context, e: BaseException, what: str, role: str) -> tuple[str, str] | None:
    return api_answer(ctx, e, IAM, what=what, role=role, endpoint=ctx.settings.iam_api_endpoint)


def check_vm_account(ctx: Context) -> tuple[str, str]:
    from google.api_core import exceptions as gexc

    from newsclf.cloud import iam
    from newsclf.errors import ConfigError

    project = ctx.project or ""
    try:
        email = iam.vm_service_account(ctx.settings, project)
    except ConfigError as e:
        return MISSING, str(e)
    if email == iam.DEFAULT_SA:
        return SKIPPED, (
            "NEWSCLF_VM_SERVICE_ACCOUNT=default: VMs run as Compute Engine's default service account, whose roles "
            "newsclf neither checks nor grants"
        )
    aid = iam.account_id(email, project)
    create_cmd = f'`gcloud iam service-accounts create {aid} --project={project} --display-name="newsclf training VMs"`'
    try:
        if ctx.clients.iam is None:
            ctx.clients.iam = iam.IamClient(ctx.settings, ctx.credentials, timeout=CALL_TIMEOUT_S)
        found = ctx.clients.iam.get_account(email)
    except Exception as e:
        answer = _iam_failure(ctx, e, f"read service account {email}", "roles/iam.serviceAccountViewer")
        if answer is None:
            raise
        return answer
    if found is not None:
        if found.get("disabled"):
            return ERROR, f"{email} is disabled: enable it (`gcloud iam service-accounts enable {email}`)"
        ctx.account = email
        return OK, f"{email} exists"
    if aid is None:
        return MISSING, (
            f"{email} does not exist, and newsclf creates service accounts only in project {project}: create it "
            "in its own project, or unset NEWSCLF_VM_SERVICE_ACCOUNT"
        )
    if not ctx.create:
        return MISSING, f"{email} does not exist: rerun without --no-create, or {create_cmd}"
    try:
        ctx.clients.iam.create_account(
            project, aid, "newsclf training VMs", "Runs newsclf's training VMs (newsclf cloud setup manages its roles)"
        )
    except gexc.Conflict:  # created in between (or by a retried request): it is there
        pass
    except Exception as e:
        answer = _iam_failure(ctx, e, f"create service account {email}", "roles/iam.serviceAccountAdmin")
        if answer is None:
            raise
        status, detail = answer
        if detail.startswith("No permission"):
            detail += f", or have an admin run {create_cmd}"
        return status, detail
    else:
        ctx.account_created = True
    ctx.account = email
    return CREATED, f"{email} created (the training VMs run as it)"


def _proto_binding(role: str, who: str) -> tuple[Callable[[Any], bool], Callable[[Any], None]]:
    """has/add for a google.iam.v1 Policy message (Artifact Registry, Secret Manager, Resource Manager)."""

    def has(policy: Any) -> bool:
        return any(b.role == role and who in b.members and not b.condition.expression for b in policy.bindings)

    def add(policy: Any) -> None:
        for b in policy.bindings:
            if b.role == role and not b.condition.expression:
                b.members.append(who)
                return
        policy.bindings.add(role=role, members=[who])

    return has, add


def _storage_binding(role: str, who: str) -> tuple[Callable[[Any], bool], Callable[[Any], None]]:
    """has/add for a google.api_core.iam.Policy (Cloud Storage's bucket policy)."""

    def has(policy: Any) -> bool:
        return any(
            b["role"] == role and who in b.get("members", ()) and not b.get("condition") for b in policy.bindings
        )

    def add(policy: Any) -> None:
        for b in policy.bindings:
            if b["role"] == role and not b.get("condition"):
                b["members"] = set(b.get("members", ())) | {who}
                return
        policy.bindings.append({"role": role, "members": {who}})

    return has, add


def _not_propagated(e: BaseException) -> bool:
    """The answer a grant to a just-created service account gets until IAM has propagated it
    ("Service account ... does not exist."; Cloud Storage says only "Invalid argument.")."""
    from google.api_core import exceptions as gexc

    text = short(e).lower()
    return isinstance(e, gexc.BadRequest) and any(
        m in text for m in ("does not exist", "not found", "invalid argument")
    )


def _proto_policy_io(client: Any, resource: str) -> dict[str, Callable[..., Any]]:
    """get/put for _ensure_binding through a generated client's get_iam_policy / set_iam_policy (Artifact
    Registry, Secret Manager, Resource Manager share that shape; version 3 keeps conditional bindings)."""
    return {
        "get": lambda: client.get_iam_policy(
            request={"resource": resource, "options": {"requested_policy_version": 3}}, timeout=CALL_TIMEOUT_S
        ),
        "put": lambda policy: client.set_iam_policy(
            request={"resource": resource, "policy": policy}, timeout=CALL_TIMEOUT_S
        ),
    }


def _ensure_binding(
    ctx: Context,
    *,
    get: Callable[[], Any],
    put: Callable[[Any], Any],
    binding: tuple[Callable[[Any], bool], Callable[[Any], None]],
    role: str,
    where: str,
    grant_cmd: str,
) -> tuple[str, str]:
    """Grant `role` to the VMs' account in a resource's IAM policy: read, add, write back with the etag
    read (so a concurrent change is refused, not overwritten; then read again), every other binding kept."""
    from google.api_core import exceptions as gexc

    has, add = binding
    waited, step = 0.0, PROPAGATION_STEP_S
    attempts = 0
    while True:
        policy = get()
        if has(policy):
            return OK, f"{role} on {where}"
        if not ctx.create:
            return MISSING, f"{ctx.account} lacks {role} on {where}: rerun without --no-create, or {grant_cmd}"
        add(policy)
        try:
            put(policy)
        except (gexc.Conflict, gexc.PreconditionFailed):  # the etag is stale: someone changed the policy
            attempts += 1
            if attempts >= POLICY_ATTEMPTS:
                return (
                    ERROR,
                    f"The IAM policy of {where} kept changing while granting {role}: rerun `newsclf cloud setup`",
                )
            continue
        except gexc.BadRequest as e:
            if not (ctx.account_created and _not_propagated(e)) or waited >= PROPAGATION_S:
                raise
            log.debug("%s not visible to %s yet; retrying in %.0f s", ctx.account, where, step)
            time.sleep(step)
            waited, step = waited + step, min(step * 2, 15.0)
            continue
        return CREATED, f"granted {role} on {where}"


def _grant_failure(e: BaseException, answer: tuple[str, str] | None, grant_cmd: str) -> tuple[str, str]:
    if answer is None:
        from google.api_core import exceptions as gexc

        if isinstance(e, gexc.BadRequest):
            return ERROR, f"{short(e)}: rerun `newsclf cloud setup`, or {grant_cmd}"
        raise e
    status, detail = answer
    if detail.startswith("No permission"):
        detail += f", or have an admin run {grant_cmd}"
    return status, detail


def check_vm_bucket(ctx: Context) -> tuple[str, str]:
    from google.api_core import exceptions as gexc

    from newsclf.cloud import iam
    from newsclf.cloud.storage.errors import translate
    from newsclf.cloud.storage.retry import retry_policy

    name, account = ctx.bucket or "", ctx.account or ""
    grant_cmd = (
        f"`gcloud storage buckets add-iam-policy-binding gs://{name} --member={iam.member(account)} "
        f"--role={iam.BUCKET_ROLE}`"
    )
    bucket = storage_of(ctx).bucket(name)
    retry = retry_policy(CALL_TIMEOUT_S)
    try:
        return _ensure_binding(
            ctx,
            get=lambda: bucket.get_iam_policy(requested_policy_version=3, retry=retry, timeout=CALL_TIMEOUT_S),
            put=lambda policy: bucket.set_iam_policy(policy, timeout=CALL_TIMEOUT_S),
            binding=_storage_binding(iam.BUCKET_ROLE, iam.member(account)),
            role=iam.BUCKET_ROLE,
            where=f"gs://{name}",
            grant_cmd=grant_cmd,
        )
    except (gexc.NotFound, gexc.MethodNotImplemented) as e:
        emulator = os.environ.get("STORAGE_EMULATOR_HOST")
        if emulator:  # fake-gcs-server has no bucket IAM policies
            return SKIPPED, f"not checked: the storage endpoint {emulator} does not support bucket IAM policies"
        err = translate(e, name)
        return ERROR, str(err) if err is not None else short(e)
    except gexc.Forbidden as e:
        if reasons(e) & {"accessNotConfigured", "SERVICE_DISABLED", "accountDisabled", "userProjectAccountProblem"}:
            return MISSING, str(translate(e, name))
        role = "roles/storage.admin"
        return MISSING, (
            f"No permission to change who may use gs://{name}: grant {role} on the bucket "
            f"(`gcloud storage buckets add-iam-policy-binding gs://{name} --member={member_of(ctx.credentials)} "
            f"--role={role}`), or have an admin run {grant_cmd}"
        )
    except Exception as e:
        err = translate(e, name)
        if err is not None:
            return ERROR, str(err)
        return _grant_failure(e, None, grant_cmd)


def check_vm_repository(ctx: Context) -> tuple[str, str]:
    from newsclf.cloud import iam

    name, account = ctx.repository or "", ctx.account or ""
    _, project, _, location, _, repo = name.split("/")
    grant_cmd = (
        f"`gcloud artifacts repositories add-iam-policy-binding {repo} --location={location} --project={project} "
        f"--member={iam.member(account)} --role={iam.REPOSITORY_ROLE}`"
    )
    client = ctx.clients.artifactregistry
    try:
        return _ensure_binding(
            ctx,
            **_proto_policy_io(client, name),
            binding=_proto_binding(iam.REPOSITORY_ROLE, iam.member(account)),
            role=iam.REPOSITORY_ROLE,
            where=f"repository {repo} ({location})",
            grant_cmd=grant_cmd,
        )
    except Exception as e:
        answer = api_answer(
            ctx,
            e,
            ARTIFACTREGISTRY,
            project=project,
            what=f"change who may read repository {repo}",
            role="roles/artifactregistry.admin",
            endpoint=ctx.settings.artifactregistry_api_endpoint,
        )
        return _grant_failure(e, answer, grant_cmd)


def secret_name(value: str, project: str) -> str:
    """NEWSCLF_WANDB_SECRET (a name, `projects/P/secrets/NAME`, or a version of it) as a secret's resource name."""
    value = value.strip().strip("/")
    if not value.startswith("projects/"):
        value = f"projects/{project}/secrets/{value}"
    return "/".join(value.split("/")[:4])  # without /versions/...


def check_vm_secret(ctx: Context) -> tuple[str, str]:
    from google.api_core import exceptions as gexc

    from newsclf.cloud import iam

    settings, account = ctx.settings, ctx.account or ""
    if not settings.wandb_secret:
        return SKIPPED, "NEWSCLF_WANDB_SECRET is not set: no W&B key for the VMs to read"
    name = secret_name(settings.wandb_secret, ctx.project or "")
    _, project, _, secret = name.split("/")
    grant_cmd = (
        f"`gcloud secrets add-iam-policy-binding {secret} --project={project} --member={iam.member(account)} "
        f"--role={iam.SECRET_ROLE}`"
    )
    try:
        if ctx.clients.secrets is None:
            ctx.clients.secrets = secrets_client(settings, ctx.credentials)
        client = ctx.clients.secrets
        return _ensure_binding(
            ctx,
            **_proto_policy_io(client, name),
            binding=_proto_binding(iam.SECRET_ROLE, iam.member(account)),
            role=iam.SECRET_ROLE,
            where=f"secret {secret}",
            grant_cmd=grant_cmd,
        )
    except gexc.NotFound:
        return MISSING, (
            f"Secret {secret} not found in project {project}: create it with your W&B key "
            f"(`gcloud secrets create {secret} --project={project} --data-file=-`, the key on stdin) or fix "
            "NEWSCLF_WANDB_SECRET"
        )
    except Exception as e:
        answer = api_answer(
            ctx,
            e,
            SECRETMANAGER,
            project=project,
            what=f"change who may read secret {secret}",
            role="roles/secretmanager.admin",
            endpoint=settings.secretmanager_api_endpoint,
        )
        return _grant_failure(e, answer, grant_cmd)


def check_vm_logging(ctx: Context) -> tuple[str, str]:
    from newsclf.cloud import iam

    return _project_grant(ctx, iam.LOGGING_ROLE)


def check_vm_batch(ctx: Context) -> tuple[str, str]:
    from newsclf.cloud import iam

    return _project_grant(ctx, iam.BATCH_AGENT_ROLE)


def _project_grant(ctx: Context, role: str) -> tuple[str, str]:
    """`role` on the project for the VMs' account (roles with no narrower resource to go on)."""
    from newsclf.cloud import iam

    settings, project, account = ctx.settings, ctx.project or "", ctx.account or ""
    resource = f"projects/{project}"
    grant_cmd = grant_command(project, role, iam.member(account))
    try:
        if ctx.clients.projects is None:
            ctx.clients.projects = projects_client(settings, ctx.credentials)
        client = ctx.clients.projects
        return _ensure_binding(
            ctx,
            **_proto_policy_io(client, resource),
            binding=_proto_binding(role, iam.member(account)),
            role=role,
            where=f"project {project}",
            grant_cmd=grant_cmd,
        )
    except Exception as e:
        answer = api_answer(
            ctx,
            e,
            RESOURCEMANAGER,
            project=project,
            what="change the project's IAM policy",
            role="roles/resourcemanager.projectIamAdmin",
            endpoint=settings.resourcemanager_api_endpoint,
        )
        return _grant_failure(e, answer, grant_cmd)


def check_vm_act_as(ctx: Context) -> tuple[str, str]:
    from google.api_core import exceptions as gexc

    from newsclf.cloud import iam

    account, you = ctx.account or "", member_of(ctx.credentials)
    waited, step = 0.0, PROPAGATION_STEP_S
    while True:
        try:
            granted = ctx.clients.iam.test_permissions(account, [iam.ACT_AS])
            break
        except gexc.NotFound:  # a just-created account IAM does not know everywhere yet
            if not ctx.account_created or waited >= PROPAGATION_S:
                return ERROR, f"IAM does not find {account} yet: rerun `newsclf cloud setup` in a minute"
            time.sleep(step)
            waited, step = waited + step, min(step * 2, 15.0)
        except Exception as e:
            answer = _iam_failure(ctx, e, f"check your access to {account}", iam.ACT_AS_ROLE)
            if answer is None:
                raise
            return answer
    if iam.ACT_AS in granted:
        return OK, f"you may create VMs that run as {account} ({iam.ACT_AS})"
    return MISSING, (
        f"You may not create VMs that run as {account} (no {iam.ACT_AS}): grant {iam.ACT_AS_ROLE} on it "
        f"(`gcloud iam service-accounts add-iam-policy-binding {account} --member={you} --role={iam.ACT_AS_ROLE}`)"
    )
