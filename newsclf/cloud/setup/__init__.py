"""`newsclf cloud setup`: check, and create where missing, what `cloud build` and `cloud run` need,
including the training VMs' own service account and its least-privilege grants.

- report.py   the rows (ok / created / missing / error / skipped) and the report they make
- context.py  what the steps share: settings, clients, what earlier steps found
- checks.py   the project, the bucket and its access, the repository, the Cloud Build, Compute and Batch APIs
- grants.py   the VMs' service account and the roles it gets on the bucket, repository, secret, project
- run.py      run_setup: every step in order, one failing step never hiding the others

Each step's detail names the fix. Idempotent: a second run creates nothing. The service clients
come from their own packages (storage, build.image for Artifact Registry, compute, iam); google.cloud
is imported lazily: importing these modules stays cheap.
"""
