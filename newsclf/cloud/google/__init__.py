"""What every Google service module shares: credentials, the project, endpoints, error words, operations.

- credentials.py  Application Default Credentials, and the check that names a broken key file
- project.py      the one project resolver (flag, NEWSCLF_GCP_PROJECT, then ADC's project)
- endpoints.py    the one "is this a local stand-in" check and the client keyword arguments it implies
- errors.py       the one error translator core: short messages, reasons, per-service hints
- operations.py   the one long-running operation waiter (Compute Engine's zone operations)

Nothing here imports google at module level: importing newsclf.cloud.* stays cheap.
"""
