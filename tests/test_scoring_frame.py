"""score_frame: one output row per input row, bad rows isolated as errors."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.infer.scoring import ERROR_COLUMN, score_frame


def predict(batch: pd.DataFrame) -> pd.DataFrame:
    if (batch["x"] < 0).any():
        raise ValueError("negative x")
    return pd.DataFrame(
        {
            "prediction": np.where(batch["x"] > 1, "big", "small"),
            "probabilities": [np.array([0.25, 0.75])] * len(batch),
        }
    )


def test_good_rows_are_scored_and_bad_rows_become_errors() -> None:
    batch = pd.DataFrame({"x": [0.5, 2.0, -1.0, None, 3.0], "c": ["a", "b", "c", "d", None]})
    out = score_frame(predict, batch, ["prediction", "probabilities"])
    assert len(out) == 5
    assert out["prediction"].tolist() == ["small", "big", None, None, None]
    assert list(out["probabilities"][0]) == [0.25, 0.75]
    errors = out[ERROR_COLUMN].tolist()
    assert errors[:2] == [None, None]
    assert errors[2] == "ValueError: negative x"
    assert errors[3] == "null feature(s): x"
    assert errors[4] == "null feature(s): c"


def test_empty_batch_gives_empty_frame() -> None:
    out = score_frame(predict, pd.DataFrame({"x": pd.Series([], dtype=float)}), ["prediction"])
    assert len(out) == 0
    assert list(out.columns) == ["prediction", ERROR_COLUMN]


def test_infinite_huge_and_rejected_rows_never_reach_the_model() -> None:
    seen: list[float] = []

    def recording(batch: pd.DataFrame) -> pd.DataFrame:
        seen.extend(batch["x"].tolist())
        return predict(batch)

    inf = float("inf")
    batch = pd.DataFrame({"x": [0.5, inf, -inf, 1e308, 2.0, None], "c": ["a"] * 6})
    rejected = np.array([None, None, None, None, "null key column(s): id", None], dtype=object)
    out = score_frame(recording, batch, ["prediction"], max_abs=1e15, rejected=rejected)
    assert seen == [0.5]
    assert out[ERROR_COLUMN].tolist() == [
        None,
        "infinite feature(s): x",
        "infinite feature(s): x",
        "feature(s) beyond +-1e+15 (data.rules.max_abs_value): x",
        "null key column(s): id",
        "null feature(s): x",
    ]
