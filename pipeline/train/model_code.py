"""The pyfunc's model file (MLflow "models from code"): MLflow runs this file to load the model.

It is referenced by path in `tracking.log_scorer`, never imported by the pipeline.
"""

import mlflow

from pipeline.train.serving import SparktrainModel

mlflow.models.set_model(SparktrainModel())
