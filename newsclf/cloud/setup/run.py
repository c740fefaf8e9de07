"""run_setup: every step in order, each reported as a row; one failing step never hides the others."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from newsclf.cloud.google.errors import short
from newsclf.cloud.setup import checks, grants
from newsclf.cloud.setup.context import Context, SetupClients
from newsclf.cloud.setup.report import CREATED, ERROR, OK, SKIPPED, SetupReport, Step
from newsclf.errors import CloudError

if TYPE_CHECKING:
    from newsclf.config import Settings

log = logging.getLogger(__name__)


def run_setup(settings: Settings, *, create: bool = True, clients: SetupClients | None = None) -> SetupReport:
    """Check every step (creating the bucket and the repository when missing, unless `create` is
    False) and return the rows; never raises for what a row can report."""
    ctx = Context(settings=settings, create=create, clients=clients or SetupClients())
    report = SetupReport(project=None, bucket=None)

    def run(step: str, fn: Callable[[Context], tuple[str, str]], needs: str | None = None) -> Step:
        if needs is not None:
            report.steps.append(Step(step, SKIPPED, f"needs the {needs} (see above)"))
            return report.steps[-1]
        try:
            status, detail = fn(ctx)
        except CloudError as e:
            status, detail = ERROR, str(e)
        except Exception as e:  # an unforeseen failure: reported in its row, the other steps still run
            log.debug("cloud setup: %s failed", step, exc_info=True)
            status, detail = ERROR, f"{type(e).__name__}: {short(e)} (unexpected; please report it)"
        report.steps.append(Step(step, status, detail))
        return report.steps[-1]

    project_ok = not run("project", checks.check_project).failed
    report.project = ctx.project
    no_project = None if project_ok else "project"
    bucket = run("bucket", checks.check_bucket, no_project)
    report.bucket = ctx.bucket
    run(
        "bucket-access",
        checks.check_bucket_access,
        no_project or (None if bucket.status in (OK, CREATED) else "bucket"),
    )
    repository = run("repository", checks.check_repository, no_project)
    run("cloudbuild-api", checks.check_cloudbuild_api, no_project)
    run("compute-api", checks.check_compute_api, no_project)
    run("batch-api", checks.check_batch_api, no_project)
    account = run("vm-account", grants.check_vm_account, no_project)
    no_account = no_project or (None if account.status in (OK, CREATED) else "VM service account")
    run("vm-bucket", grants.check_vm_bucket, no_account or (None if bucket.status in (OK, CREATED) else "bucket"))
    if repository.status == SKIPPED and not no_project:  # the image is not in Artifact Registry
        report.steps.append(Step("vm-repository", SKIPPED, "the image is not in Artifact Registry: nothing to grant"))
    else:
        run(
            "vm-repository",
            grants.check_vm_repository,
            no_account or (None if repository.status in (OK, CREATED) else "Artifact Registry repository"),
        )
    run("vm-secret", grants.check_vm_secret, no_account)
    run("vm-logging", grants.check_vm_logging, no_account)
    run("vm-batch", grants.check_vm_batch, no_account)
    run("vm-act-as", grants.check_vm_act_as, no_account)
    return report
