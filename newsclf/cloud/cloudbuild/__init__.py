"""Cloud Build and Artifact Registry: the training image, built from the source and checked before a run.

- ignore.py      which files go into the build context (.dockerignore as Docker reads it, .gcloudignore as git)
- source.py      the deterministic source tarball, content-addressed in the bucket
- context.py     what to build: a project directory, or the installed newsclf and the build files it carries
- image.py       the image's name and tags, and the Artifact Registry check `cloud run` makes before a VM is paid for
- submit.py      the Cloud Build client, its errors, and submitting and following a build
- logtail.py     reading a build's growing log object from the bucket
"""
