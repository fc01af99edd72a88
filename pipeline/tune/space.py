"""The search space: `tune.space` parsed into typed parameters, checked before any trial runs.

Each entry maps a dotted key of the existing config to one distribution:

    train.lr: {loguniform: [1e-4, 1e-1]}
    train.batch_size: {int: [16, 128]}
    model.dropout: {uniform: [0.0, 0.5]}
    model.hidden: {choice: [[64, 32], [128, 64]]}

A key must exist in the config (the error names the closest one), every bound and choice
must be a value the key accepts (its type and `bounded` range), and a choice of a typed key
must not mix types. Keys under the free-form `model.kwargs` are only checked when a trial
builds its model: a combination the model refuses fails that trial, not the study.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

from pipeline.config import Config, key_type, with_values
from pipeline.errors import ConfigError

Kind = Literal["loguniform", "uniform", "int", "choice"]
KINDS: tuple[Kind, ...] = get_args(Kind)
EXAMPLE = "e.g. tune.space={train.lr: {loguniform: [0.0001, 0.1]}}"


@dataclass(frozen=True)
class Param:
    """One searched key. Choices are kept as JSON text inside Optuna (its categorical
    values must be scalars, and a choice may be a list such as model.hidden)."""

    key: str
    kind: Kind
    low: float = 0.0
    high: float = 0.0
    choices: tuple[Any, ...] = ()

    def describe(self) -> dict[str, Any]:
        bounds: list[Any] = list(self.choices) if self.kind == "choice" else [self.low, self.high]
        return {self.kind: bounds}

    def suggest(self, trial: Any) -> Any:
        """The value Optuna's `trial` samples for this key."""
        if self.kind == "choice":
            picked = trial.suggest_categorical(self.key, [json.dumps(c) for c in self.choices])
            return json.loads(picked)
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high))
        return trial.suggest_float(self.key, self.low, self.high, log=self.kind == "loguniform")

    def value_of(self, stored: Any) -> Any:
        """A value as Optuna stores it (choices as JSON) back to the config's value."""
        return json.loads(stored) if self.kind == "choice" else stored


@dataclass(frozen=True)
class Space:
    params: tuple[Param, ...]

    def signature(self) -> str:
        """Canonical JSON of the space: a resumed study must have the same one."""
        return json.dumps({p.key: p.describe() for p in self.params}, sort_keys=True)

    def values(self, stored: dict[str, Any]) -> dict[str, Any]:
        """Config values of a trial's stored params."""
        return {p.key: p.value_of(stored[p.key]) for p in self.params if p.key in stored}


def _numeric(tp: Any) -> type | None:
    """int or float for a numeric key (also `int | None`), else None."""
    args = {a for a in get_args(tp) if a is not type(None)} if get_origin(tp) else {tp}
    for kind in (int, float):
        if args == {kind}:
            return kind
    return None


def _bounds(key: str, kind: Kind, spec: Any) -> tuple[float, float]:
    if not (isinstance(spec, list | tuple) and len(spec) == 2):
        raise ConfigError(f"tune.space.{key}: {kind} takes [low, high], got {spec!r}")
    low, high = spec
    for bound in (low, high):
        if isinstance(bound, bool) or not isinstance(bound, int | float | str):
            raise ConfigError(f"tune.space.{key}: bounds must be numbers, got {spec!r}")
    try:
        lo, hi = float(low), float(high)
    except ValueError:
        raise ConfigError(f"tune.space.{key}: bounds must be numbers, got {spec!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ConfigError(f"tune.space.{key}: bounds must be finite, got {spec!r}")
    if lo >= hi:
        raise ConfigError(
            f"tune.space.{key}: {kind} needs low < high, got low={low} high={high}; "
            f"e.g. tune.space.{key}={{{kind}: [{min(lo, hi):g}, {max(lo, hi) * 10 or 1:g}]}}"
        )
    if kind == "loguniform" and lo <= 0:
        raise ConfigError(
            f"tune.space.{key}: loguniform needs positive bounds (it samples the logarithm), "
            f"got low={low}; use a small positive low such as 1e-5, or uniform"
        )
    if kind == "int" and not (lo.is_integer() and hi.is_integer()):
        raise ConfigError(f"tune.space.{key}: int takes whole-number bounds, got {spec!r}")
    return lo, hi


def _float_text(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _choices(key: str, tp: Any, spec: Any) -> tuple[Any, ...]:
    if not isinstance(spec, list) or not spec:
        raise ConfigError(f"tune.space.{key}: choice takes a non-empty list, got {spec!r}")
    if _numeric(tp) is float:
        # YAML 1.1 reads 1e-5 (no dot) as a string; the config takes it as the number it is
        spec = [_float_text(c) for c in spec]
    if tp is not Any:
        kinds = {type(c) for c in spec}
        if _numeric(tp) is float:
            kinds = {float if k is int else k for k in kinds}  # 1 and 0.5 are both floats
        if len(kinds) > 1:
            names = ", ".join(sorted(k.__name__ for k in kinds))
            raise ConfigError(
                f"tune.space.{key}: choice mixes types ({names}: {spec!r}), but {key} takes "
                "one type; give every choice the same type"
            )
    return tuple(spec)


def _param(key: str, spec: Any) -> Param:
    tp = key_type(Config, key)  # unknown keys name the closest valid key
    if not (isinstance(spec, dict) and len(spec) == 1 and next(iter(spec)) in KINDS):
        raise ConfigError(
            f"tune.space.{key} must be one distribution, one of {', '.join(KINDS)}, "
            f"e.g. {{loguniform: [0.0001, 0.1]}}; got {spec!r}"
        )
    kind: Kind = next(iter(spec))
    if kind == "choice":
        return Param(key, kind, choices=_choices(key, tp, spec[kind]))
    numeric = _numeric(tp)
    if tp is not Any and numeric is None:
        raise ConfigError(
            f"tune.space.{key}: {key} is not a number, so it takes {{choice: [...]}}, not {kind}"
        )
    if numeric is int and kind != "int":
        raise ConfigError(
            f"tune.space.{key}: {key} is an integer; use {{int: [low, high]}} or a choice, "
            f"not {kind}"
        )
    low, high = _bounds(key, kind, spec[kind])
    return Param(key, kind, low, high)


def _probe_values(param: Param) -> list[Any]:
    if param.kind == "choice":
        return list(param.choices)
    if param.kind == "int":
        return [int(param.low), int(param.high)]
    return [param.low, param.high]


def parse_space(cfg: Config) -> Space:
    """Typed parameters of `cfg.tune.space`, each bound and choice checked against the key's
    type and range (by building the config with it)."""
    raw = cfg.tune.space
    if not raw:
        raise ConfigError(f"tune.space is empty: give at least one key to search, {EXAMPLE}")
    params = tuple(_param(key, spec) for key, spec in raw.items())
    for param in params:
        for value in _probe_values(param):
            try:
                with_values(cfg, {param.key: value})
            except ConfigError as exc:
                raise ConfigError(
                    f"tune.space.{param.key}: the value {value!r} is not valid for {param.key}: "
                    f"{exc}"
                ) from None
    return Space(params)
