"""``python -m flows``: the command line of the DICOM pipeline."""

from flows.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
