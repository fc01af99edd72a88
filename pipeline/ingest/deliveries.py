"""A later delivery of raw penguins rows, for the demo and the B9 benchmark's incremental runs."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from pipeline.ingest.sources import resolve_source

PENGUINS_RAW = "pkg://palmerpenguins/data/penguins-raw.csv"


def write_penguin_delivery(path: Path, count: int, id_prefix: str) -> Path:
    """`count` raw rows spread over the file, with new individual ids (`<id_prefix>00`, ...),
    written as a CSV at `path`: new field observations that an append ingests as new keys."""
    rows = list(csv.reader(io.StringIO(Path(resolve_source(PENGUINS_RAW)).read_text())))
    header, body = rows[0], rows[1:]
    ind = header.index("Individual ID")
    picked = [list(r) for r in body[:: len(body) // count][:count]]
    for i, row in enumerate(picked):
        row[ind] = f"{id_prefix}{i:02d}"
    out = io.StringIO()
    csv.writer(out).writerows([header, *picked])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(out.getvalue())
    return path
