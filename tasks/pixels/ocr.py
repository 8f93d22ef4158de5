"""Words in an 8-bit image, found by Tesseract run as a command (``tesseract``, TSV output).

The command line instead of a Python binding: pytesseract is only a wrapper of the same
command, and tesserocr needs a build against the library; the Debian package
``tesseract-ocr`` is all this needs. Each call costs a process start (~50 ms) plus the
recognition (tenths of a second for a small image), so callers stack the frames they
check into one image, and give one call every image of a batch (:meth:`Tesseract.read_many`).
"""

from __future__ import annotations

import io
import os
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from tasks.errors import DicomEtlError

#: Page segmentation mode 11, "sparse text": text anywhere, in no particular order (banners, corners).
SPARSE_TEXT = 11
#: Smallest side Tesseract is given; smaller images are padded.
MIN_SIDE = 64


class OcrError(DicomEtlError):
    """Tesseract is not installed, or it failed on an image: nothing could be checked."""


@dataclass(frozen=True)
class Word:
    """One word Tesseract read, with its box in the image's pixel coordinates."""

    text: str
    conf: float
    left: int
    top: int
    width: int
    height: int

    @property
    def bottom(self) -> int:
        return self.top + self.height

    @property
    def right(self) -> int:
        return self.left + self.width


@dataclass(frozen=True)
class Tesseract:
    """How to run Tesseract.

    Parameters
    ----------
    command : str, default "tesseract"
        The executable (a name on PATH or a path).
    psm : int, default 11
        Page segmentation mode; 11 finds sparse text anywhere in the image.
    language : str, default "eng"
    upscale_below : int, default 800
        Images whose longer side is shorter are enlarged twice before recognition: small
        burned-in fonts (8-12 px) are read far more reliably at twice the size.
    timeout : float, default 120
        Seconds one recognition may take before it counts as a failure.
    thresholding : int, default 0
        Tesseract's ``thresholding_method``: 0 global Otsu, 1 local Otsu, 2 Sauvola (adaptive).
        Each misses text the other reads (a light banner on a coloured bar, faint corners),
        so cleaning and verification use different ones.
    """

    command: str = "tesseract"
    psm: int = SPARSE_TEXT
    language: str = "eng"
    upscale_below: int = 800
    timeout: float = 120.0
    thresholding: int = 0

    def read_words(self, image: np.ndarray) -> list[Word]:
        """The words Tesseract finds in an 8-bit greyscale (H, W) or RGB (H, W, 3) image.

        Boxes are in the coordinates of ``image`` (undoing any enlargement).

        Raises
        ------
        OcrError
            If the command is missing, fails or times out.
        """
        return self.read_many([image])[0]

    def read_many(self, images: Sequence[np.ndarray]) -> list[list[Word]]:
        """The words of several images, read by one Tesseract process (its model loaded once).

        Loading the model costs ~0.25 s of CPU, most of a small image's reading: a batch
        of images pays it once.

        Raises
        ------
        OcrError
            If the command is missing, fails or times out (on any of the images: read them
            one by one to tell which).
        """
        if not images:
            return []
        prepared = [self._prepare(image) for image in images]
        if len(prepared) == 1:
            pgm, scale = prepared[0]
            return [parse_tsv(self._run("stdin", pgm, len(pgm)), scale=scale)]
        with tempfile.TemporaryDirectory(prefix="ocr-") as tmp:
            paths = []
            for i, (pgm, _) in enumerate(prepared):
                path = os.path.join(tmp, f"{i:05d}.pgm")
                with open(path, "wb") as fh:
                    fh.write(pgm)
                paths.append(path)
            listing = os.path.join(tmp, "images.txt")  # Tesseract reads a list of images as pages
            with open(listing, "w") as fh:
                fh.write("\n".join(paths) + "\n")
            tsv = self._run(listing, None, sum(len(p) for p, _ in prepared))
        pages: list[list[str]] = [[] for _ in prepared]
        for line in tsv.splitlines()[1:]:
            cols = line.split("\t", 2)
            if len(cols) > 2 and cols[1].isdigit() and 1 <= int(cols[1]) <= len(pages):
                pages[int(cols[1]) - 1].append(line)
        header = "level\n"
        return [parse_tsv(header + "\n".join(lines), scale=scale) for lines, (_, scale) in zip(pages, prepared)]

    def _prepare(self, image: np.ndarray) -> tuple[bytes, int]:
        """The image as Tesseract reads it (PGM, greyscale, padded, enlarged) and its enlargement."""
        pil = Image.fromarray(np.ascontiguousarray(image), mode="RGB" if image.ndim == 3 else "L").convert("L")
        if min(pil.size) < MIN_SIDE:  # Tesseract refuses tiny images; pad right and bottom (boxes keep their place)
            canvas = Image.new("L", (max(pil.width, MIN_SIDE), max(pil.height, MIN_SIDE)), 0)
            canvas.paste(pil, (0, 0))
            pil = canvas
        scale = 2 if max(pil.size) < self.upscale_below else 1
        if scale > 1:
            pil = pil.resize((pil.width * scale, pil.height * scale), Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        pil.save(buf, format="PPM")  # PGM: no compression to pay for, read by Leptonica
        return buf.getvalue(), scale

    def _run(self, source: str, data: bytes | None, size: int) -> str:
        """Run Tesseract on ``source`` (``stdin`` with ``data``, or a file listing images); its TSV."""
        args = [self.command, source, "stdout", "--psm", str(self.psm), "-l", self.language]
        args += ["-c", f"thresholding_method={self.thresholding}", "tsv"]
        # one OpenMP thread: the process pool already runs one recognition per core
        env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
        try:
            done = subprocess.run(args, input=data, capture_output=True, timeout=self.timeout, env=env, check=False)
        except FileNotFoundError as exc:
            msg = f"the OCR command {self.command!r} was not found; install Tesseract (Debian: apt-get install tesseract-ocr)"
            raise OcrError(msg) from exc
        except subprocess.TimeoutExpired as exc:
            msg = f"{self.command} took more than {self.timeout:.0f} s on {size / 1e6:.1f} MB of images"
            raise OcrError(msg) from exc
        if done.returncode != 0:
            err = done.stderr.decode(errors="replace").strip().splitlines()
            msg = f"{self.command} exited with status {done.returncode}: {err[-1] if err else 'no message'}"
            raise OcrError(msg)
        return done.stdout.decode("utf-8", errors="replace")


def parse_tsv(tsv: str, *, scale: int = 1) -> list[Word]:
    """Words (level 5 rows with text) of Tesseract's TSV output, boxes divided by ``scale``.

    Parameters
    ----------
    tsv : str
        The output of ``tesseract ... tsv``: a header line, then ``level page_num block_num
        par_num line_num word_num left top width height conf text`` rows.
    scale : int, default 1
        How much the image was enlarged before recognition.

    Returns
    -------
    list of Word
    """
    words = []
    for line in tsv.splitlines()[1:]:
        cols = line.split("\t")
        if len(cols) < 12 or cols[0] != "5" or not cols[11].strip():
            continue
        left, top, width, height = (int(c) for c in cols[6:10])
        # round outwards: a box must still cover the text once shrunk back
        x0, y0 = left // scale, top // scale
        x1, y1 = -(-(left + width) // scale), -(-(top + height) // scale)
        words.append(Word(cols[11].strip(), float(cols[10]), x0, y0, x1 - x0, y1 - y0))
    return words
