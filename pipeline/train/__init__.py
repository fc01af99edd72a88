"""Distributed training: Delta (pinned version) -> Petastorm -> Horovod ranks -> MLflow.

Modules: fit (preprocessing fitted in Spark), preprocess (applied with numpy),
data (Petastorm shards), loop (the per-rank loop), checkpoint, tracking,
serving (the pyfunc contract), evaluate, registry, job (the driver side).
Importing this package stays light: the served model imports serving.py in
processes that have no Spark.
"""
