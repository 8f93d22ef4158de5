"""``python -m flows synth``: write a synthetic DICOM corpus (deterministic by seed)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="write N synthetic DICOM files (patients x studies x series x images)")
    p.add_argument("--out", required=True, help="folder to write into")
    p.add_argument("--files", type=int, default=1000, help="number of files (default 1000)")
    p.add_argument(
        "--profile",
        default="small",
        choices=["small", "realistic", "ct"],
        help="small: 64x64 header-dominated files; realistic: CT 512x512 (some JPEG-LS/RLE), MR, CR, US, multi-frame; "
        "ct: native 512x512 16-bit CT slices only",
    )
    p.add_argument("--seed", type=int, default=0, help="same seed, same bytes")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tasks.dicom.corpus import generate_corpus
    from tasks.lake.files import ensure_writable_folder

    ensure_writable_folder(args.out, what="output folder", option="--out")

    info = generate_corpus(Path(args.out), files=args.files, profile=args.profile, seed=args.seed)
    print(f"wrote {info.files} files, {info.bytes / 1e6:.1f} MB under {info.root}")
    return 0
