"""scikit-learn's bundled 8x8 digits written out as a PNG folder tree (one folder per class).

The 16 grey levels (0..16) are scaled to 0..255, so ingest decodes pixel
values of round(v * 255 / 16) / 255, within 1/510 of v / 16.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

_logger = logging.getLogger(__name__)

GREY_LEVELS = 16


def digit_file(label: int, index: int) -> str:
    """Relative path of image `index` (its position in load_digits) with class `label`."""
    return f"{label}/{index:04d}.png"


def write_digits_tree(out_dir: str | Path) -> dict[str, int]:
    """Write the 1,797 digits as `<out_dir>/<label>/<index>.png`; return images per label."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    root = Path(out_dir)
    counts: dict[str, int] = {}
    for index, (image, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        pixels = np.rint(image * (255.0 / GREY_LEVELS)).clip(0, 255).astype(np.uint8)
        target = root / digit_file(int(label), index)
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels, mode="L").save(target, format="PNG")
        counts[str(label)] = counts.get(str(label), 0) + 1
    _logger.info("wrote %d digit images under %s", sum(counts.values()), root)
    return counts
