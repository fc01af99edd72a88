"""Kept so models logged before the contract moved to `pipeline/contract` still load: their
model file imports `pipeline.train.serving.SparktrainModel`. New code imports
`pipeline.contract.serving`."""

from pipeline.contract.serving import SparktrainModel

__all__ = ["SparktrainModel"]
