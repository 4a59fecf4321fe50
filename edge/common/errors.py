"""The one base class of every error that means "the input is wrong", not "the program is".

    from edge.common.errors import UserError

Each stage raises its own typed subclass (ConfigError, ArtifactError, ModelError, ImageError,
DataError, CheckError, ExportError, DemoError, DeployError, ...), and each command catches
`UserError` once: it prints one line naming the problem to stderr and exits with
`EXIT_USAGE`. Anything else is a bug and keeps its traceback. It derives from ValueError,
so code that caught ValueError before still does.
"""

from __future__ import annotations

import sys

#: Exit status of a command given bad input (the same as argparse's usage errors).
EXIT_USAGE = 2


class UserError(ValueError):
    """Bad input (a file, a flag, an image, a dataset); the message names it and what was expected."""


def report(error: UserError, command: str | None = None) -> int:
    """Print `error` as one line on stderr ("error: ...", or "COMMAND: error: ...") and return the
    exit status a command should end with."""
    print(f"{command}: error: {error}" if command else f"error: {error}", file=sys.stderr)
    return EXIT_USAGE
