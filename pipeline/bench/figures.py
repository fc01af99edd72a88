"""A benchmark figure (ours vs the peer, their ratio, units) and the report of a run.

Ratios are always ours / peer. Whether higher is better depends on the units
(rows/s: higher; seconds and MiB: lower), which is why a target carries its
own comparison, e.g. (">=", 0.95) for B3 or ("<=", 1.2) for B6.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Target = tuple[Literal[">=", "<="], float]


@dataclass(frozen=True, kw_only=True)
class Pair:
    """One side-by-side measurement: our value and the peer's, in the same units."""

    value: float
    peer: float
    units: str
    peer_name: str
    target: Target | None = None

    @property
    def ratio(self) -> float:
        return self.value / self.peer if self.peer else math.nan

    @property
    def met(self) -> bool | None:
        if self.target is None or not math.isfinite(self.ratio):
            return None
        op, bound = self.target
        return self.ratio >= bound if op == ">=" else self.ratio <= bound

    def to_json(self) -> dict[str, Any]:
        return {
            "value": _round(self.value),
            "peer": _round(self.peer),
            "ratio": _round(self.ratio),
            "units": self.units,
            "peer_name": self.peer_name,
            "target": None if self.target is None else f"{self.target[0]} {self.target[1]:g}",
            "met": self.met,
        }


@dataclass(frozen=True, kw_only=True)
class Figure:
    """B<n>: the main pair, optional secondary pairs (B4 start-up, B5 limit), and the setting."""

    key: str
    name: str
    main: Pair
    rows: int  # data size the figure was measured on
    workers: int
    batch_size: int | None
    measured: str  # exactly what was timed, in a sentence or two
    also: dict[str, Pair] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self, context: dict[str, Any]) -> dict[str, Any]:
        return {
            "name": self.name,
            **self.main.to_json(),
            **{name: pair.to_json() for name, pair in self.also.items()},
            "rows": self.rows,
            "workers": self.workers,
            "batch_size": self.batch_size,
            "measured": self.measured,
            "details": {
                k: _round(v) if isinstance(v, float) else v for k, v in self.details.items()
            },
            "machine": context["machine"],
            "packages": context["packages"],
        }


def _round(value: float, digits: int = 4) -> float:
    """Keep four significant digits: more would be noise on a shared machine."""
    if not math.isfinite(value) or value == 0:
        return value
    return round(value, max(digits - 1 - int(math.floor(math.log10(abs(value)))), 0))


@dataclass(frozen=True)
class Report:
    figures: list[Figure]
    context: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {f.key: f.to_json(self.context) for f in self.figures}
        out["context"] = self.context
        return out

    def write(self, path: str | Path) -> Path:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n")
        return target

    def ratios(self) -> dict[str, float]:
        return {f.key: _round(f.main.ratio) for f in self.figures}

    def markdown(self) -> str:
        """The README "Performance" table: one line per pair, then the setting."""
        lines = [
            "| id | figure | ours | peer | ratio | target | rows | workers | batch |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for fig in self.figures:
            pairs = [(fig.key, fig.name, fig.main)]
            pairs += [(f"{fig.key} {name}", name, pair) for name, pair in fig.also.items()]
            for key, name, pair in pairs:
                target = "" if pair.target is None else f"{pair.target[0]} {pair.target[1]:g}"
                if pair.met is not None:
                    target += " ✓" if pair.met else " ✗"
                lines.append(
                    f"| {key} | {name} vs {pair.peer_name} | {_show(pair.value)} {pair.units} | "
                    f"{_show(pair.peer)} {pair.units} | {pair.ratio:.2f} | {target} | "
                    f"{fig.rows:,} | {fig.workers} | {fig.batch_size or '-'} |"
                )
        m, p = self.context["machine"], self.context["packages"]
        lines.append("")
        lines.append(
            f"Machine: {m['cores']} cores, {m['memory_gib']} GiB, GPU: {m['gpu'] or 'none'}; "
            f"load average {self.context['load_average_start']} at start, "
            f"{self.context['load_average_end']} at end; total {self.context['seconds']:.0f} s."
        )
        lines.append("Packages: " + ", ".join(f"{k} {v}" for k, v in sorted(p.items())) + ".")
        return "\n".join(lines)


def _show(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"
