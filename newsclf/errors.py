"""Errors a person can act on: each message names the problem and the fix."""


class NewsclfError(Exception):
    """A failure newsclf understands; its message is shown as one `Error: ...` line."""

    exit_code = 1


class InputError(NewsclfError):
    """Bad input data or arguments that are not usage errors (missing file, bad CSV, ...)."""


class ConfigError(NewsclfError):
    """A setting is missing or invalid."""


class CloudError(NewsclfError):
    """A Google Cloud call failed in a way the user can fix (credentials, bucket, permission)."""


class Terminated(KeyboardInterrupt):
    """The process got SIGTERM: it unwinds like Ctrl-C (clean-up, resume hint), and the CLI exits 143."""
