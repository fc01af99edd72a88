"""Typed, validated configuration loaded from YAML with dotted overrides.

One `Config` holds one dataclass per component. A YAML file in `conf/` fills
the sections a job needs; the rest keep their defaults, so the same file
drives ingest, training and inference of one dataset.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from pipeline.errors import ConfigError

T = TypeVar("T")

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
RANGE = "range"  # field metadata key: the allowed interval of a numeric value (see `bounded`)


@dataclass(frozen=True)
class Range:
    """An interval for a numeric config value (each item, for a list); None is open."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def violated(self, value: float) -> bool:
        return (
            not math.isfinite(value)
            or (self.ge is not None and value < self.ge)
            or (self.gt is not None and value <= self.gt)
            or (self.le is not None and value > self.le)
            or (self.lt is not None and value >= self.lt)
        )

    def text(self) -> str:
        low = "(-inf" if self.gt is None else f"({self.gt:g}"
        high = "inf)" if self.lt is None else f"{self.lt:g})"
        if self.ge is not None:
            low = f"[{self.ge:g}"
        if self.le is not None:
            high = f"{self.le:g}]"
        return f"{low}, {high}"


def bounded(
    default: Any,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> Any:
    """A numeric field whose configured value must lie in the interval. `default` is the
    value, or a callable (for lists) that makes it. The loader checks every value given
    in YAML or an override against it (see `_check_range`)."""
    metadata = {RANGE: Range(ge=ge, gt=gt, le=le, lt=lt)}
    if callable(default):
        return field(default_factory=default, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(kw_only=True)
class SparkConfig:
    """Spark session settings. Under spark-submit the cluster's settings win."""

    master: str = "local[2]"
    app_name: str = "sparktrain"
    shuffle_partitions: int = bounded(4, ge=1)
    ui: bool = False
    # Local sessions map the class archive `make setup` builds (pipeline.class_archive):
    # seconds off every JVM start. false starts the JVM without it.
    class_archive: bool = True
    conf: dict[str, str] = field(default_factory=dict)


@dataclass(kw_only=True)
class LakeConfig:
    """Where Delta tables live and how they are written."""

    root: str = "lake"
    # auto: delta-spark when its jars are on the classpath, else delta-rs (see
    # pipeline.lake.engine). $SPARKTRAIN_LAKE_ENGINE sets the default (the tests' parity lane).
    engine: Literal["auto", "delta-spark", "delta-rs"] = field(
        default_factory=lambda: os.environ.get("SPARKTRAIN_LAKE_ENGINE", "auto")  # type: ignore[arg-type,return-value]
    )
    # Rows per Parquet file and per row group. Petastorm shards by row group,
    # so a table needs at least `min_row_groups` of them (see Delta writer).
    target_file_rows: int = bounded(1_000_000, ge=1)
    row_group_rows: int = bounded(100_000, ge=1)
    min_row_groups: int = bounded(8, ge=1)
    partition_by: list[str] = field(default_factory=list)
    # A de-duplicating append that loses a race re-reads the table and tries again
    # this many times before failing with ConcurrentWriteError.
    commit_retries: int = bounded(3, ge=0)
    # Tables Petastorm cannot stream (partitioned, deletion vectors, column mapping, no
    # split column) are trained on from a Parquet copy of the pinned version made once
    # with Spark: kept here ("" = <root>/_snapshots), the newest `snapshot_keep` per table.
    snapshot_dir: str = ""
    snapshot_keep: int = bounded(2, ge=1)
    # data.upsert on delta-rs merges in the driver: allowed up to this many rows (table + input).
    driver_merge_max_rows: int = bounded(1_000_000, ge=0)

    def __post_init__(self) -> None:
        if self.engine not in ("auto", "delta-spark", "delta-rs"):
            raise ConfigError(
                f"lake.engine must be one of auto, delta-spark, delta-rs, got {self.engine!r} "
                "(from $SPARKTRAIN_LAKE_ENGINE when the config does not set it)"
            )
        if self.row_group_rows <= 0 or self.target_file_rows <= 0:
            raise ConfigError(
                "lake.row_group_rows and lake.target_file_rows must be positive; "
                "set e.g. lake.row_group_rows=100000"
            )


@dataclass(kw_only=True)
class SplitConfig:
    train: float = bounded(0.7, ge=0, le=1)
    val: float = bounded(0.15, ge=0, le=1)
    test: float = bounded(0.15, ge=0, le=1)
    # A source with its own train/test split (one .ts file per split) keeps it: test stays
    # test, and this fraction of its train part becomes validation by the same key hash.
    source_val: float = bounded(0.2, ge=0, lt=1)

    def __post_init__(self) -> None:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6 or min(self.train, self.val, self.test) < 0:
            raise ConfigError(
                f"data.split fractions must be >= 0 and sum to 1, got "
                f"train={self.train} val={self.val} test={self.test} (sum {total:g}); "
                "e.g. data.split.train=0.7 data.split.val=0.15 data.split.test=0.15"
            )


@dataclass(kw_only=True)
class RulesConfig:
    """Cleaning rules applied at ingest. Column names are the cleaned (snake_case) names."""

    required: list[str] = field(default_factory=list)
    allowed: dict[str, list[Any]] = field(default_factory=dict)
    ranges: dict[str, list[float | None]] = field(default_factory=dict)
    null_values: list[str] = field(default_factory=lambda: ["", "NA", "N/A", "null", "NULL"])
    trim: bool = True
    lowercase: list[str] = field(default_factory=list)
    uppercase: list[str] = field(default_factory=list)
    dedup_key: list[str] = field(default_factory=list)
    # column -> regex with one capture group; the group replaces the value
    # (e.g. species: '^(\w+)' keeps "Adelie" of "Adelie Penguin (...)"). No match rejects the row.
    extract: dict[str, str] = field(default_factory=dict)
    # Numbers beyond +-max_abs_value (and inf, NaN) are rejected at ingest and routed to the
    # errors table at inference: standardised and cast to float32 they overflow the model.
    max_abs_value: float = bounded(1e15, gt=0)


@dataclass(kw_only=True)
class SyntheticConfig:
    """jobs/generate.py: penguin-like raw rows written to `data.source`."""

    rows: int = bounded(100_000, ge=1)
    dirty_fraction: float = bounded(0.05, ge=0, le=1)
    duplicate_fraction: float = bounded(0.01, ge=0, le=1)
    seed: int = bounded(7, ge=0)
    # Output files (= Spark tasks); rows are generated in Spark, never on the driver.
    files: int = bounded(4, ge=1)
    format: Literal["csv", "parquet", "json"] = "csv"

    def __post_init__(self) -> None:
        if self.rows < 1 or self.files < 1:
            raise ConfigError(
                "data.synthetic.rows and data.synthetic.files must be >= 1, "
                "e.g. data.synthetic.rows=1000000 data.synthetic.files=8"
            )
        for name in ("dirty_fraction", "duplicate_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"data.synthetic.{name} must be in [0, 1], got {value}")


@dataclass(kw_only=True)
class SequenceConfig:
    """Sequences (data.format=ts, or an array column of a Parquet or JSON lines source) in one
    canonical layout: `column` holds max_length x channels
    floats (time-major, zero-padded), `length_column` the steps before the padding,
    `channels_column` the channels per step (the same in every row)."""

    column: str = "series"
    length_column: str = "length"
    channels_column: str = "channels"
    # The padded length; unset: the longest series of the input. A longer series is rejected
    # (rule `too_long`), or cut to max_length with truncate=true.
    max_length: int | None = bounded(None, ge=1)
    truncate: bool = False
    # Missing values ('?' or NaN in a .ts file) reject the row (rule `missing`) unless allowed;
    # allowed ones become 0.
    allow_missing: bool = False
    # A Parquet or JSON lines source whose column holds each series (see
    # pipeline/ingest/array_sequences.py): an array of numbers (one channel) or of arrays;
    # `nested` says whether the outer array is the steps (each a value per channel) or the
    # channels (each the whole series).
    array_column: str | None = None
    nested: Literal["steps", "channels"] = "steps"


@dataclass(kw_only=True)
class DataConfig:
    """The dataset: raw source, schema, and which columns feed the model."""

    name: str = "dataset"
    source: str = ""
    format: Literal["csv", "json", "parquet", "images", "ts"] = "csv"
    # column -> Spark SQL type name (string, double, int, long, boolean, date, timestamp)
    schema: dict[str, str] = field(default_factory=dict)
    # Raw column -> clean column. Columns not listed are renamed to snake_case.
    rename: dict[str, str] = field(default_factory=dict)
    # Keep only these clean columns (after renaming); empty keeps all.
    keep: list[str] = field(default_factory=list)
    features: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    label: str | None = None
    # A task registered in pipeline/contract/tasks.py (TASKS); checked when training.
    task: str = "classification"
    id: list[str] = field(default_factory=list)
    table: str = ""
    version: int | None = bounded(None, ge=0)
    mode: Literal["append", "overwrite"] = "append"
    # On append: `none` refuses columns the table lacks; `add_columns` adds them as
    # nullable columns. A dropped column or a changed type is refused either way.
    schema_evolution: Literal["none", "add_columns"] = "none"
    # Merge rows by data.id on append: a changed row replaces the old one (pipeline.lake.upsert).
    upsert: bool = False
    rules: RulesConfig = field(default_factory=RulesConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    # A column of the source that holds each row's split (train, val or test; case ignored):
    # kept instead of the hash split, with validation carved from train by
    # data.split.source_val. Any other value rejects the row (rule `split`).
    split_column: str | None = None
    # Images: decoded to a float array of image_size x image_size x channels in [0, 1].
    image_size: int = bounded(8, ge=1)
    image_channels: int = bounded(1, ge=1)
    # For anomaly detection: label value(s) that count as normal.
    normal_labels: list[Any] = field(default_factory=list)
    # Extra Spark reader options for csv/json sources (e.g. sep: ';').
    read_options: dict[str, str] = field(default_factory=dict)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    sequence: SequenceConfig = field(default_factory=SequenceConfig)

    @property
    def table_name(self) -> str:
        return self.table or self.name

    @property
    def sequences(self) -> bool:
        """Whether the source holds sequences: .ts files or an array column."""
        return self.format == "ts" or self.sequence.array_column is not None

    def __post_init__(self) -> None:
        if self.sequence.array_column is not None and self.format not in ("parquet", "json"):
            raise ConfigError(
                f"data.sequence.array_column reads series from a Parquet or JSON lines source, "
                f"but data.format={self.format}; set data.format=parquet or json, or drop it"
            )
        if self.split_column is not None and self.format in ("ts", "images"):
            raise ConfigError(
                f"data.split_column names a column of a table source, and data.format="
                f"{self.format} has none; split .ts files by name (*_TRAIN.ts, *_TEST.ts) "
                "or drop data.split_column"
            )
        if self.upsert and (not self.id or self.rules.dedup_key or self.mode != "append"):
            raise ConfigError(
                "data.upsert=true merges appended rows into the table by data.id: set data.id "
                "(e.g. data.id=[customer_id]), leave data.rules.dedup_key empty (an upsert "
                "replaces known keys instead of dropping them) and keep data.mode=append"
            )


@dataclass(kw_only=True)
class ModelConfig:
    """Model family and sizes. `name` is the registered model name in MLflow."""

    name: str = "sparktrain-model"
    # A family registered in pipeline/contract/specs.py (SPECS): mlp, cnn, autoencoder, or
    # custom (your own nn.Module, see README "Your own model"); checked when training.
    family: str = "mlp"
    # family=custom: the class ("my_pkg.nets:MyNet"), extra constructor arguments, and
    # the input kind it takes (which sizes it is given: see specs.DERIVED_ARGS).
    module: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    input: Literal["tabular", "image", "sequence"] = "tabular"
    # Any family: "my_pkg.losses:focal" replaces the task's loss, called as fn(outputs, target).
    loss: str | None = None
    hidden: list[int] = bounded(lambda: [64, 32], ge=1)
    dropout: float = bounded(0.0, ge=0, lt=1)
    channels: list[int] = bounded(lambda: [16, 32], ge=1)
    latent: int = bounded(4, ge=1)
    # Sequence families: recurrent/transformer layers, a bidirectional LSTM/GRU, attention
    # heads (model.hidden[0] is the LSTM/GRU hidden size and the transformer's d_model).
    layers: int = bounded(1, ge=1)
    bidirectional: bool = False
    heads: int = bounded(4, ge=1)
    # LSTM/GRU and transformer: consecutive steps fed as one (a 150-step series in patches
    # of 10 is 15 recurrent steps or tokens).
    patch: int = bounded(1, ge=1)
    # Anomaly threshold: this quantile of validation reconstruction error of normal rows.
    threshold_quantile: float = bounded(0.99, gt=0, le=1)

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold_quantile <= 1.0:
            raise ConfigError(
                f"model.threshold_quantile must be in (0, 1], got {self.threshold_quantile}; "
                "e.g. model.threshold_quantile=0.99"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if (self.module or self.kwargs) and self.family != "custom":
            raise ConfigError(
                f"model.module/model.kwargs are set but model.family={self.family}; set "
                "model.family=custom to train your own nn.Module, or drop them"
            )


@dataclass(kw_only=True)
class TrainConfig:
    workers: int = bounded(2, ge=1)
    epochs: int = bounded(20, ge=1)
    batch_size: int = bounded(32, ge=1)
    lr: float = bounded(0.01, gt=0)
    optimizer: Literal["adam", "sgd"] = "adam"
    weight_decay: float = bounded(0.0, ge=0)
    warmup_epochs: int = bounded(1, ge=0)
    # After warm-up: "constant", or "cosine" down to 0 at the last step (pipeline.train.schedule).
    lr_schedule: Literal["constant", "cosine"] = "constant"
    seed: int = bounded(42, ge=0)
    resume: bool = False
    fp16_allreduce: bool = False
    # 0 turns early stopping off.
    early_stopping_patience: int = bounded(5, ge=0)
    early_stopping_min_delta: float = bounded(0.0, ge=0)
    checkpoint_dir: str = "checkpoints"
    launcher: Literal["auto", "spark", "local"] = "auto"
    start_timeout_s: int = bounded(120, ge=1)
    use_gpu: bool = False
    mixed_precision: bool = True
    # Petastorm reader pool: "dummy" reads in the rank's own thread, so a seeded run
    # repeats exactly; "thread" (reader_workers threads) overlaps I/O but not in a fixed order.
    reader_pool: Literal["thread", "dummy"] = "dummy"
    reader_workers: int = bounded(1, ge=1)
    # Rows per forward pass when scoring validation/test data (no gradients kept).
    eval_batch_size: int = bounded(1024, ge=1)
    # Train rows a rank shuffles together across row groups (tables are often
    # stored in label order, so one row group alone is a poor batch source).
    shuffle_buffer_rows: int = bounded(10_000, ge=1)
    # A lost rank (process or executor) restarts the ranks from the last checkpoint, in the
    # same MLflow run, at most this many times (ranks on Spark only: one in-process rank is
    # the driver itself).
    max_restarts: int = bounded(1, ge=0)
    # A rank that reaches no new step (or whose process does not run) for this long is
    # ended by its watchdog; Horovod's stall shutdown and Gloo's timeout are set just above.
    stall_timeout_s: float = bounded(300.0, gt=0)
    # The splits the ranks train on. [train, val] leaves no validation split: no early
    # stopping, the last epoch's weights are the model, and it has no validation score of its
    # own to register with (jobs/tune.py tune.retrain=true does this for a study's winner).
    fit_on: list[Literal["train", "val"]] = field(default_factory=lambda: ["train"])

    @property
    def validates(self) -> bool:
        """Whether a validation split is left to score each epoch on."""
        return "val" not in self.fit_on

    @property
    def fit_splits(self) -> tuple[str, ...]:
        """The splits the ranks train on and the preprocessing is fitted on."""
        return tuple(self.fit_on)

    def __post_init__(self) -> None:
        if "train" not in self.fit_on or len(set(self.fit_on)) != len(self.fit_on):
            raise ConfigError(
                f"train.fit_on must be [train] or [train, val], got {self.fit_on}; e.g. "
                "train.fit_on=[train,val]"
            )
        if not self.validates and self.early_stopping_patience > 0:
            raise ConfigError(
                f"train.fit_on={self.fit_on} leaves no validation split, so early stopping "
                f"(train.early_stopping_patience={self.early_stopping_patience}) has nothing to "
                "watch; set train.early_stopping_patience=0 and train.epochs to the epochs to "
                "train"
            )
        for name in (
            "workers",
            "epochs",
            "batch_size",
            "eval_batch_size",
            "reader_workers",
            "shuffle_buffer_rows",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(
                    f"train.{name} must be >= 1, got {getattr(self, name)}; e.g. train.{name}=2"
                )
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}; e.g. train.lr=0.01")
        if self.max_restarts < 0 or self.stall_timeout_s < 1:
            raise ConfigError(
                "train.max_restarts must be >= 0 and train.stall_timeout_s >= 1 "
                f"(got {self.max_restarts} and {self.stall_timeout_s}); e.g. "
                "train.max_restarts=1 train.stall_timeout_s=300"
            )
        if self.warmup_epochs < 0 or self.start_timeout_s < 1:
            raise ConfigError(
                "train.warmup_epochs must be >= 0 and train.start_timeout_s >= 1 "
                f"(got {self.warmup_epochs} and {self.start_timeout_s})"
            )


@dataclass(kw_only=True)
class TrackingConfig:
    # None: $MLFLOW_TRACKING_URI if set, else a SQLite store ./mlflow.db (see tracking_uri()).
    uri: str | None = None
    experiment: str = "sparktrain"
    artifact_location: str | None = None
    register: bool = True
    alias: str = "champion"
    run_name: str | None = None
    # How long the pre-training check of the tracking store may take before it counts as down.
    check_timeout_s: float = bounded(10.0, gt=0)
    # Training goes on while the tracking server is down (metrics are buffered and kept in the
    # checkpoint); an outage longer than this stops the job, which can then be resumed.
    outage_timeout_s: float = bounded(300.0, gt=0)
    # A RUNNING run whose driver heartbeat tag is older than this is marked KILLED by the next
    # training job of its experiment and by jobs/doctor.py (its driver died). Longer than
    # outage_timeout_s: a driver waiting out an outage cannot write its heartbeat.
    orphan_after_s: float = bounded(900.0, gt=0)

    def __post_init__(self) -> None:
        if self.outage_timeout_s <= 0 or self.orphan_after_s <= self.outage_timeout_s:
            raise ConfigError(
                f"tracking.orphan_after_s ({self.orphan_after_s:g}) must be longer than "
                f"tracking.outage_timeout_s ({self.outage_timeout_s:g}) and both positive, or "
                "a live job waiting out an outage would be marked KILLED; e.g. "
                "tracking.outage_timeout_s=300 tracking.orphan_after_s=900"
            )

    def tracking_uri(self) -> str:
        return self.uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


@dataclass(kw_only=True)
class InferConfig:
    model_uri: str | None = None
    input_table: str = ""
    output_table: str = ""
    key: list[str] = field(default_factory=list)
    batch_size: int = bounded(1024, ge=1)
    split: str | None = None


@dataclass(kw_only=True)
class BenchConfig:
    """jobs/bench.py: sizes and repeats of the side-by-side benchmarks B1..B7."""

    # Raw synthetic rows generated for B1-B5 and B7 (clean rows are ~94% of them).
    rows: int = bounded(1_000_000, ge=1000)
    # B6: a worker's peak RSS on a table of memory_rows[1] rows vs one of memory_rows[0].
    memory_rows: list[int] = bounded(lambda: [1_000_000, 10_000_000], ge=1000)
    # B6: train steps each measured worker runs (the reader is still opened on the full table).
    memory_steps: int = bounded(200, ge=1)
    # --quick: the same benchmarks at these sizes, only to prove the code works.
    quick_rows: int = bounded(20_000, ge=1000)
    quick_memory_rows: list[int] = bounded(lambda: [20_000, 200_000], ge=1000)
    # Each side of a pair is measured this many times, alternating; the best run counts.
    rounds: int = bounded(3, ge=1)
    quick_rounds: int = bounded(1, ge=1)
    # B7: epochs per measured training run, and runs per side (its effect is small: more runs).
    tracking_epochs: int = bounded(1, ge=1)
    tracking_rounds: int = bounded(5, ge=1)
    # B8: studies of tune_trials random-sampler trials (tune_epochs each) on the table of
    # tune_conf (penguins), with pruning and without; quick_* for --quick.
    tune_conf: str = "conf/penguins.yaml"
    tune_trials: int = bounded(16, ge=2)
    tune_epochs: int = bounded(12, ge=2)
    quick_tune_trials: int = bounded(2, ge=2)
    quick_tune_epochs: int = bounded(2, ge=2)
    # Scratch space (raw data, lake, MLflow store); wiped at the start of a run.
    workdir: str = "bench-out/work"

    def __post_init__(self) -> None:
        if len(self.memory_rows) != 2 or len(self.quick_memory_rows) != 2:
            raise ConfigError(
                "bench.memory_rows and bench.quick_memory_rows take two sizes [small, large], "
                "e.g. bench.memory_rows=[1000000,10000000]"
            )
        sizes = [self.rows, self.quick_rows, *self.memory_rows, *self.quick_memory_rows]
        counts = [
            self.memory_steps,
            self.rounds,
            self.quick_rounds,
            self.tracking_epochs,
            self.tracking_rounds,
        ]
        if min(sizes) < 1000 or min(counts) < 1:
            raise ConfigError(
                "bench sizes must be >= 1000 rows and bench.memory_steps, bench.rounds, "
                "bench.quick_rounds, bench.tracking_epochs >= 1; e.g. bench.rows=1000000"
            )
        for name in ("memory_rows", "quick_memory_rows"):
            small, large = getattr(self, name)
            # the large B6 table is k copies of the small one's files (see pipeline/bench/memory.py)
            if large % small:
                raise ConfigError(
                    f"bench.{name}={[small, large]}: the large size must be a whole multiple of "
                    f"the small one, e.g. bench.{name}=[{small},{small * 10}]"
                )


@dataclass(kw_only=True)
class TuneConfig:
    """jobs/tune.py: an Optuna study whose trials are training runs (see pipeline/tune/)."""

    # dotted config key -> one distribution: {loguniform: [lo, hi]}, {uniform: [lo, hi]},
    # {int: [lo, hi]} or {choice: [a, b, ...]}; checked by pipeline.tune.space.
    space: dict[str, dict[str, Any]] = field(default_factory=dict)
    trials: int = bounded(20, ge=1)
    # Stop starting new trials after this many seconds (None: no time limit).
    timeout_s: float | None = bounded(None, gt=0)
    # Trials at once; each takes train.workers task slots.
    parallel: int = bounded(1, ge=1)
    sampler: Literal["tpe", "random"] = "tpe"
    pruner: Literal["median", "successive_halving", "none"] = "median"
    seed: int = bounded(0, ge=0)
    # The pruner leaves the first trials and epochs alone: too little to compare against.
    prune_startup_trials: int = bounded(2, ge=0)
    prune_warmup_epochs: int = bounded(1, ge=0)
    # Study name (default: "<model.name>-tune") and the study's own database (default: a
    # SQLite file beside MLflow's SQLite store). Never MLflow's database: both keep schema tables.
    study: str | None = None
    storage: str | None = None
    resume: bool = False
    # After the study, train the best configuration again on train + val for the best trial's
    # best epoch count, and register that model with the trial's validation score.
    retrain: bool = False


@dataclass(kw_only=True)
class Config:
    spark: SparkConfig = field(default_factory=SparkConfig)
    lake: LakeConfig = field(default_factory=LakeConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    infer: InferConfig = field(default_factory=InferConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)

    def table_path(self, table: str) -> str:
        """Absolute path (or URI) of a table under `lake.root`."""
        if "://" in table or os.path.isabs(table):
            return table
        root = self.lake.root
        if "://" in root:
            return root.rstrip("/") + "/" + table
        return str(Path(root).absolute() / table)


# ---------------------------------------------------------------- loading


def _closest(key: str, valid: typing.Iterable[str]) -> str:
    match = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    return f"; did you mean '{match[0]}'?" if match else ""


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against the type hint `tp`, building nested dataclasses."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if value is None:
            return tp()
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping of keys, got {value!r}")
        return _build(tp, value, where)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(
                f"{where} must be one of {', '.join(map(str, allowed))}; got {value!r}"
            )
        return value
    if origin is list:
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(
                f"{where} must be a list, e.g. {where.split(' ')[-1]}=[a,b]; got {value!r}"
            )
        (item,) = get_args(tp) or (Any,)
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        _, vt = get_args(tp) or (Any, Any)
        return {str(k): _coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if tp is float:
        # YAML 1.1 reads "1e-3" (no dot) as a string; accept it as the number it is.
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    return value


def _check_range(value: Any, spec: dataclasses.Field[Any], where: str) -> None:
    """A numeric value (or each number of a list) outside its field's `bounded` interval."""
    rng = spec.metadata.get(RANGE)
    if rng is None or value is None:
        return
    items = enumerate(value) if isinstance(value, list) else [(None, value)]
    for index, item in items:
        if rng.violated(item):
            # the field's default is always inside its interval: a fix that works
            default = spec.default_factory() if callable(spec.default_factory) else spec.default
            raise ConfigError(
                f"{where}{'' if index is None else f'[{index}]'} must be in {rng.text()}, "
                f"got {item!r}; e.g. {where}={_yaml(default)} (the default)"
            )


def _yaml(value: Any) -> str:
    return "[" + ",".join(map(str, value)) + "]" if isinstance(value, list) else str(value)


def _build(cls: type[T], values: dict[str, Any], where: str) -> T:
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    names = list(fields)
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            raise ConfigError(
                f"unknown config key '{path}'{_closest(str(key), names)} "
                f"(valid keys{' under ' + where if where else ''}: {', '.join(names)})"
            )
        kwargs[key] = _coerce(value, hints[key], path)
        _check_range(kwargs[key], fields[key], path)
    try:
        return cls(**kwargs)
    except TypeError as exc:  # pragma: no cover - dataclass signature mismatch
        raise ConfigError(f"{where or 'config'}: {exc}") from exc


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse `a.b.c=value`; the value is YAML, so `x=[a,b]` gives a list."""
    if "=" not in text:
        raise ConfigError(
            f"malformed override '{text}': write overrides as dotted key=value, "
            "e.g. train.epochs=5 or data.features=[a,b]"
        )
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"malformed override '{text}': the key before '=' is empty or has '..'")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"malformed override '{text}': its value is not valid YAML ({exc.__class__.__name__}); "
            "quote strings with special characters, e.g. key='a: b'"
        ) from exc
    return key.split("."), value


def _dotted_keys(cls: Any, keys: list[str]) -> list[str]:
    """`keys`, with everything after a mapping field joined into one key: Spark's keys
    hold dots (spark.conf.spark.sql.shuffle.partitions=8 sets "spark.sql.shuffle.partitions"),
    and so do tune.space's (tune.space.train.lr={loguniform: [0.0001, 0.01]})."""
    for i, key in enumerate(keys[:-1]):
        if not (dataclasses.is_dataclass(cls) and isinstance(cls, type)):
            break
        tp = get_type_hints(cls).get(key)
        if get_origin(tp) is dict:
            return [*keys[: i + 1], ".".join(keys[i + 1 :])]
        cls = tp
    return keys


def _set_dotted(tree: dict[str, Any], keys: list[str], value: Any) -> None:
    node = tree
    for k in keys[:-1]:
        nxt = node.get(k)
        if nxt is None:
            nxt = node[k] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"cannot override '{'.'.join(keys)}': '{k}' is not a section")
        node = nxt
    node[keys[-1]] = value


def load_config(
    path: str | os.PathLike[str] | None = None,
    overrides: typing.Sequence[str] = (),
    cls: type[T] = Config,  # type: ignore[assignment]
) -> T:
    """Load `cls` from a YAML file plus dotted `key=value` overrides."""
    tree: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(
                f"config file '{path}' not found; pass an existing YAML file, "
                f"e.g. --config conf/penguins.yaml (files in conf/: "
                f"{', '.join(sorted(x.name for x in Path('conf').glob('*.yaml'))) or 'none'})"
            )
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file '{path}' is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file '{path}' must hold a mapping of sections at top level")
        tree = loaded
    for text in overrides:
        keys, value = parse_override(text)
        _set_dotted(tree, _dotted_keys(cls, keys), value)
    return _build(cls, tree, "")


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten a config into dotted keys, e.g. for MLflow params."""
    tree = to_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and all(isinstance(k, str) for k in value):
            nested = flatten(value, name + ".")
            out.update(nested)
        else:
            out[name] = value
    return out


def with_values(cfg: T, values: dict[str, Any]) -> T:
    """A copy of `cfg` with dotted keys set to `values`, checked like YAML and overrides."""
    tree = to_dict(cfg)
    for key, value in values.items():
        _set_dotted(tree, _dotted_keys(type(cfg), key.split(".")), value)
    return _build(type(cfg), tree, "")


def key_type(cls: type, key: str) -> Any:
    """The type hint of dotted `key` under the dataclass `cls`; keys under a free-form
    mapping (model.kwargs.width) are Any. Unknown keys name the closest valid one."""
    node: Any = cls
    parts = key.split(".")
    for i, part in enumerate(parts):
        if get_origin(node) is dict:
            return Any
        if not (dataclasses.is_dataclass(node) and isinstance(node, type)):
            break
        hints = get_type_hints(node)
        if part not in hints:
            valid = list(flatten(cls()))
            raise ConfigError(f"unknown config key '{key}'{_closest(key, valid)}")
        node = hints[part]
        if i == len(parts) - 1:
            return node
    raise ConfigError(f"'{key}' is not a config value: '{'.'.join(parts[:-1])}' is not a section")
