"""Image folders: one subfolder per class, PNG or JPEG files, decoded in Spark executors.

Spark's binaryFile source lists and reads the files; each task decodes its
images with Pillow into a fixed-size float array in [0, 1] (row-major HWC,
`image_size` x `image_size` x `image_channels`). Images of another size are
resized (bilinear). A file Pillow cannot decode becomes a reject with rule
"decode"; a file outside any class folder a reject with rule "label".
"""

from __future__ import annotations

import io
import json
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pipeline.config import DataConfig
from pipeline.errors import ConfigError

DECODED_DDL = (
    "image array<float>, label string, path string, _source_file string, "
    "_decode_rule string, _decode_reason string, _raw string"
)
_DECODED = pa.schema(
    [
        ("image", pa.list_(pa.float32())),
        ("label", pa.string()),
        ("path", pa.string()),
        ("_source_file", pa.string()),
        ("_decode_rule", pa.string()),
        ("_decode_reason", pa.string()),
        ("_raw", pa.string()),
    ]
)


@dataclass(frozen=True)
class ImageSpec:
    root: str
    size: int
    channels: int


def _local(uri: str) -> str:
    """A path without its file: scheme (Spark writes file:/x, file:///x)."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme in ("", "file"):
        return urllib.parse.unquote(parsed.path)
    return uri


def relative_path(uri: str, root: str) -> str:
    path, base = _local(uri), _local(root).rstrip("/")
    return path[len(base) + 1 :] if path.startswith(base + "/") else path


def decode_image(content: bytes, spec: ImageSpec) -> np.ndarray:
    """Pixels as float32 in [0, 1], shape (size * size * channels,), row-major HWC."""
    from PIL import Image

    with Image.open(io.BytesIO(content)) as img:
        img.load()
        converted = img.convert("L" if spec.channels == 1 else "RGB")
    if converted.size != (spec.size, spec.size):
        converted = converted.resize((spec.size, spec.size), Image.Resampling.BILINEAR)
    return (np.asarray(converted, dtype=np.float32) / 255.0).reshape(-1)


def _decode_batches(spec: ImageSpec, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    width = spec.size * spec.size * spec.channels
    for batch in batches:
        paths = batch.column("path").to_pylist()
        contents = batch.column("content").to_pylist()
        pixels: list[np.ndarray] = []
        valid: list[bool] = []
        labels, rels, rules, reasons, raws = [], [], [], [], []
        for uri, content in zip(paths, contents, strict=True):
            rel = relative_path(uri, spec.root)
            folders = rel.split("/")[:-1]
            rule = reason = None
            if not folders:
                rule, reason = "label", f"{rel} is not inside a class folder (root/<label>/file)"
            else:
                try:
                    pixels.append(decode_image(content or b"", spec))
                except Exception as exc:  # Pillow raises many types for bad files
                    rule, reason = "decode", f"cannot decode {rel} as an image: {exc}"
            ok = rule is None
            valid.append(ok)
            labels.append(folders[0] if folders else None)
            rels.append(rel)
            rules.append(rule)
            reasons.append(reason)
            raws.append(json.dumps({"path": rel, "bytes": len(content or b"")}))
        flat = np.concatenate(pixels) if pixels else np.zeros(0, dtype=np.float32)
        # One offset per row; rejected rows get a null image.
        offsets = np.zeros(len(valid) + 1, dtype=np.int32)
        offsets[1:] = np.cumsum([width if ok else 0 for ok in valid])
        mask = pa.array([not ok for ok in valid])
        images = pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat), mask=mask)
        yield pa.RecordBatch.from_arrays(
            [
                images,
                pa.array(labels, pa.string()),
                pa.array(rels, pa.string()),
                pa.array(paths, pa.string()),
                pa.array(rules, pa.string()),
                pa.array(reasons, pa.string()),
                pa.array(raws, pa.string()),
            ],
            schema=_DECODED,
        )


def read_images(spark: SparkSession, data: DataConfig, location: str) -> DataFrame:
    """Decoded images with `label` (class folder), `path` (relative to root) and decode errors."""
    if data.image_channels not in (1, 3):
        raise ConfigError(
            f"data.image_channels must be 1 (grey) or 3 (RGB), got {data.image_channels}"
        )
    if data.image_size < 1:
        raise ConfigError(f"data.image_size must be >= 1, got {data.image_size}")
    spec = ImageSpec(root=location, size=data.image_size, channels=data.image_channels)
    files = (
        spark.read.format("binaryFile")
        .option("recursiveFileLookup", "true")
        .option("pathGlobFilter", "*.{png,PNG,jpg,JPG,jpeg,JPEG}")
        .load(location)
        .select("path", "content")
    )
    decoded = files.mapInArrow(partial(_decode_batches, spec), DECODED_DDL)
    return decoded.withColumn("_row_id", F.monotonically_increasing_id())
