"""``python -m flows``: the command line of the DICOM pipeline."""

import atexit
import os
import sys


class _ExitWithoutTeardown:
    """End the process once every exit handler has run, without tearing the heap down.

    Registered before anything else is imported, so it runs last: after Prefect has flushed
    its logs and events, the process pool has stopped, and logging has shut down. What would
    remain is the interpreter freeing every module and object one by one, about 0.5 s with
    Prefect, polars, pyarrow and pydicom loaded, which no output depends on (the warehouse's
    DuckDB handles are closed by the build itself).
    """

    def __init__(self) -> None:
        self.status = 0

    def __call__(self) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(self.status)


if __name__ == "__main__":
    exit_now = _ExitWithoutTeardown()
    atexit.register(exit_now)
    from flows.cli import main

    try:
        exit_now.status = main()
    except SystemExit as exc:  # argparse's --help and usage errors
        exit_now.status = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        raise
    except BaseException:
        atexit.unregister(exit_now)  # a traceback, or Ctrl-C's own exit: Python's way
        raise
    raise SystemExit(exit_now.status)
