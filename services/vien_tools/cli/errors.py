"""The CLI's expected failures (printed as one line, no traceback) and its exit codes; imported by every command
module, so no command module needs `main`."""

EXIT_USAGE, EXIT_FAILED = 2, 1


class CliError(Exception):
    """An expected failure: printed as one line, no traceback."""
