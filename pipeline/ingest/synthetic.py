"""Penguin-like synthetic raw data of any size, generated in Spark (never on the driver).

Every value is a function of the row's key and the seed (hash-based uniforms,
Box-Muller normals), so the output does not depend on how Spark partitions
the work, and a duplicate row (same key) repeats its original exactly. The
species drives the measurements as in the real data (Gentoo: heavy with long
flippers, Chinstrap: long culmen, Adelie: short culmen), so the label is
learnable from the features. A `dirty_fraction` of rows gets one defect that
the penguin rules reject: a missing measurement, "." for sex, a non-numeric
mass, an impossible flipper length, or an unknown island.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from pipeline.config import SyntheticConfig

# (raw species, share, (culmen length, culmen depth, flipper, mass) means and sds, islands)
SPECIES = [
    (
        "Adelie Penguin (Pygoscelis adeliae)",
        0.44,
        ((38.8, 2.7), (18.3, 1.2), (190.0, 6.5), (3700.0, 460.0)),
        ["Torgersen", "Biscoe", "Dream"],
    ),
    (
        "Gentoo penguin (Pygoscelis papua)",
        0.36,
        ((47.5, 3.1), (15.0, 1.0), (217.0, 6.5), (5076.0, 504.0)),
        ["Biscoe"],
    ),
    (
        "Chinstrap penguin (Pygoscelis antarctica)",
        0.20,
        ((48.8, 3.3), (18.4, 1.1), (196.0, 7.1), (3733.0, 384.0)),
        ["Dream"],
    ),
]
# Males are larger; added to the means above (half of it subtracted for females).
MALE_OFFSET = (3.0, 1.2, 6.0, 500.0)
HEADER = [
    "Sample ID",
    "Species",
    "Island",
    "Culmen Length (mm)",
    "Culmen Depth (mm)",
    "Flipper Length (mm)",
    "Body Mass (g)",
    "Sex",
]
DEFECTS = 5
_MODULUS = 2_147_483_647  # 2^31 - 1


def _uniform(key: Column, seed: int, salt: int) -> Column:
    """U(0, 1), exclusive, from the key: the same key always draws the same value."""
    h = F.pmod(F.xxhash64(key, F.lit(seed), F.lit(salt)), F.lit(_MODULUS))
    return (h + F.lit(0.5)) / F.lit(float(_MODULUS))


def _normal(key: Column, seed: int, salt: int) -> Column:
    u1, u2 = _uniform(key, seed, salt), _uniform(key, seed, salt + 1)
    return F.sqrt(F.lit(-2.0) * F.log(u1)) * F.cos(F.lit(2 * math.pi) * u2)


def _by_species(species_index: Column, values: Sequence[Column | str]) -> Column:
    out = F.lit(values[-1]) if isinstance(values[-1], str) else values[-1]
    for i in range(len(values) - 2, -1, -1):
        value = F.lit(values[i]) if isinstance(values[i], str) else values[i]
        out = F.when(species_index == i, value).otherwise(out)
    return out


def generate_raw(spark: SparkSession, synth: SyntheticConfig) -> DataFrame:
    """Raw rows as strings under `HEADER`, `synth.files` partitions of them."""
    seed = synth.seed
    ids = spark.range(0, synth.rows, numPartitions=synth.files)
    row = F.col("id")
    # A duplicate repeats the previous row's key, hence all its values.
    key = F.when(
        (row > 0) & (_uniform(row, seed, 1) < synth.duplicate_fraction), row - 1
    ).otherwise(row)
    df = ids.select(key.alias("key"))
    k = F.col("key")

    draw = _uniform(k, seed, 10)
    species_index = F.when(draw < SPECIES[0][1], 0).when(draw < SPECIES[0][1] + SPECIES[1][1], 1)
    species_index = species_index.otherwise(2)
    male = _uniform(k, seed, 11) < 0.5
    measures: list[Column] = []
    for m in range(4):
        mean = _by_species(species_index, [F.lit(s[2][m][0]) for s in SPECIES])
        sd = _by_species(species_index, [F.lit(s[2][m][1]) for s in SPECIES])
        offset = F.when(male, MALE_OFFSET[m] / 2).otherwise(-MALE_OFFSET[m] / 2)
        # 0.8 sd: with the sex offset, the spread per species is about the real one.
        measures.append(mean + offset + sd * 0.8 * _normal(k, seed, 20 + 2 * m))
    island_draw = F.floor(_uniform(k, seed, 12) * 3).cast("int")
    islands = [
        F.element_at(F.array(*[F.lit(i) for i in s[3]]), island_draw % len(s[3]) + 1)
        for s in SPECIES
    ]
    values = {
        "Sample ID": F.format_string("S%010d", k),
        "Species": _by_species(species_index, [s[0] for s in SPECIES]),
        "Island": _by_species(species_index, islands),
        "Culmen Length (mm)": F.round(measures[0], 1).cast("string"),
        "Culmen Depth (mm)": F.round(measures[1], 1).cast("string"),
        "Flipper Length (mm)": F.round(measures[2]).cast("int").cast("string"),
        "Body Mass (g)": (F.round(measures[3] / 25) * 25).cast("int").cast("string"),
        "Sex": F.when(male, F.lit("MALE")).otherwise(F.lit("FEMALE")),
    }
    dirty = _uniform(k, seed, 30) < synth.dirty_fraction
    defect = F.floor(_uniform(k, seed, 31) * DEFECTS).cast("int")
    spoiled = {
        "Culmen Length (mm)": (0, "NA"),
        "Sex": (1, "."),
        "Body Mass (g)": (2, "heavy"),
        "Flipper Length (mm)": (3, "999"),
        "Island": (4, "Atlantis"),
    }
    for name, (which, bad) in spoiled.items():
        values[name] = F.when(dirty & (defect == which), F.lit(bad)).otherwise(values[name])
    return df.select(*[values[h].alias(h) for h in HEADER])


def write_raw(df: DataFrame, out: str, fmt: str) -> None:
    writer = df.write.mode("overwrite")
    if fmt == "csv":
        writer.option("header", "true").csv(out)
    elif fmt == "json":
        writer.json(out)
    else:
        writer.parquet(out)
