"""newsclf on Google Cloud: one package per Google service over one shared layer.

- google/     credentials, the project, endpoints, the error translator core, the operation waiter
- storage/    Cloud Storage (the bucket: data, runs, build sources, status)
- compute/    Compute Engine (the training VM and following its run)
- cloudbuild/ Cloud Build and Artifact Registry (the training image; `build/` is in .gitignore)
- setup/      `newsclf cloud setup` (checks and creates what the others need)
- batch.py    Cloud Batch (a cloud sweep: one job, one task per trial)
- iam.py      IAM (the training VMs' service account)
- layout.py   every object name in the bucket
- startup.sh  what runs on the VM

Nothing here imports google at module level: `newsclf --help` stays fast.
"""
