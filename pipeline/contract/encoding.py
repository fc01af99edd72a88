"""Column values as the strings vocabularies and classes are kept in, and their codes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

SMALL_VOCABULARY = 32  # up to this many categories, codes() compares instead of hashing


def as_strings(values: Any) -> np.ndarray:
    """Values as a numpy array of str, the form vocabularies and classes are kept in.

    Missing values become "None"/"nan", which are never in a vocabulary fitted
    on non-null values, so they fall into the unseen slot. A column that already
    holds only str objects (string columns without nulls, as Petastorm and pandas
    hand them over) is returned as is: converting it to fixed-width unicode was
    the largest single cost of the training data path (benchmarks B2, B3).
    """
    array = np.asarray(values)
    if array.dtype == object and pd.api.types.infer_dtype(array, skipna=False) == "string":
        return array
    return array.astype(str)


def codes(values: Any, vocabulary: list[str]) -> np.ndarray:
    """Index of each value in `vocabulary`, -1 where absent.

    Small vocabularies (the usual categorical feature or class label) take one
    vectorised comparison per entry, which beats hashing every value through
    pandas several times over; larger ones go through pd.Categorical.
    """
    strings = as_strings(values)
    if len(vocabulary) > SMALL_VOCABULARY:
        return np.asarray(pd.Categorical(strings, categories=vocabulary).codes, np.int64)
    out = np.full(len(strings), -1, np.int64)
    for index, value in enumerate(vocabulary):
        out[strings == value] = index
    return out


def numbers(values: Any) -> np.ndarray:
    return np.asarray(pd.to_numeric(pd.Series(np.asarray(values)), errors="coerce"), np.float64)
