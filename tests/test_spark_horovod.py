"""The Spark session factory and a real 2-rank Horovod job on the local Spark session."""

from __future__ import annotations

import pytest

from pipeline.errors import TrainingError
from pipeline.launch import run_distributed, spark_slots
from pipeline.spark import delta_spark_available


def test_session_is_local_with_few_partitions(spark) -> None:  # type: ignore[no-untyped-def]
    assert spark.sparkContext.master == "local[2]"
    assert spark.conf.get("spark.sql.shuffle.partitions") == "2"
    assert spark.conf.get("spark.ui.enabled") == "false"
    assert spark_slots(spark) == 2
    # make setup cached Delta Lake's jars; the factory loaded them with the extension
    assert delta_spark_available(spark) is True
    assert spark.conf.get("spark.sql.extensions") == "io.delta.sql.DeltaSparkSessionExtension"


def _allreduce(base: float) -> dict[str, float]:
    import horovod.torch as hvd
    import torch

    hvd.init()
    try:
        value = torch.tensor([base * (hvd.rank() + 1)])
        total = hvd.allreduce(value, op=hvd.Sum, name="x")
        return {"rank": hvd.rank(), "size": hvd.size(), "sum": float(total.item())}
    finally:
        hvd.shutdown()


def test_two_rank_allreduce_through_horovod_spark_run(spark) -> None:  # type: ignore[no-untyped-def]
    results = run_distributed(
        spark, _allreduce, (10.0,), num_proc=2, launcher="spark", start_timeout_s=120
    )
    assert sorted(r["rank"] for r in results) == [0, 1]
    assert all(r["size"] == 2 for r in results)
    # 10*1 + 10*2, summed across the two ranks
    assert all(r["sum"] == pytest.approx(30.0) for r in results)


def test_one_worker_runs_in_process() -> None:
    (result,) = run_distributed(None, _allreduce, (5.0,), num_proc=1)
    assert result == {"rank": 0, "size": 1, "sum": 5.0}


def test_more_workers_than_slots_fails_fast_with_the_fix(spark) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TrainingError, match=r"only 2 task slots.*spark.master=local\[3\]"):
        run_distributed(spark, _allreduce, (1.0,), num_proc=3, launcher="spark")
