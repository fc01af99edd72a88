"""Distributed training: Delta (pinned version) -> Petastorm -> Horovod ranks -> MLflow.

Modules: fit (preprocessing fitted in Spark, from what the task declares), data
(Petastorm shards), loop (the per-rank loop), checkpoint, tracking, evaluate,
registry (the champion, chosen on validation), user_code (the user's package,
shipped to ranks and logged), job (the driver side). What a task or a model
family means lives in `pipeline/contract`; `serving.py` here only keeps models
logged before that move loadable.
"""
