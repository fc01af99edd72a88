"""The pyfunc's model file (MLflow "models from code"): MLflow runs this file to load the model.

It is referenced by path in `pipeline/train/tracking.log_scorer`, never imported by the pipeline.
"""

import mlflow

from pipeline.contract.serving import SparktrainModel

mlflow.models.set_model(SparktrainModel())
