"""The two kinds of failure the CLI distinguishes: exit 2 for bad input, exit 1 for a failed check."""


class UserError(Exception):
    """Bad arguments or input: the CLI prints the one-line message and exits with code 2."""

    exit_code = 2


class CheckFailed(Exception):
    """A check did not pass (e.g. C differs from the reference): exit code 1."""

    exit_code = 1
