"""User-facing errors: one clear line naming the key, file, row or column at fault."""
import functools
import sys


class UserError(Exception):
    """Bad input from the user (params, data, model folder). Printed as one line, exit code 2."""


def cli(main):
    """Wrap a stage's main(): a UserError becomes one line on stderr and exit 2, not a traceback."""

    @functools.wraps(main)
    def run(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    return run
