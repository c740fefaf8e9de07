"""Cloud Storage: the bucket newsclf keeps data, runs and build sources in (names: newsclf/cloud/layout.py).

- client.py    the storage.Client, the configured bucket, listings, crc32c
- retry.py     the retry policy and deadlines every request carries
- errors.py    the exceptions and the translation of Google errors into one line naming the fix
- transfer.py  the parallel engine: progress hooks, cancellation, results
- upload.py    verified, precondition-guarded uploads of files and directories
- download.py  verified, resumable downloads of objects and prefixes
- objects.py   small JSON objects (status.json, sweep records)
- runs.py      training runs in the bucket: list, pull, push

Every download is checked against the object's crc32c and written to a hidden part file that is
renamed into place only when complete (a later pull resumes it). Every upload carries a generation
precondition, so it never replaces an object someone else wrote in between, and transient errors
are retried with backoff. google.cloud is imported lazily: importing these modules stays cheap.
"""
