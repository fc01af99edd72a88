"""The task/model contract: one owner for what a task and a model family mean.

Spark-free, Horovod-free and config-free: training (`pipeline/train`), batch
inference (`pipeline/infer`) and the logged MLflow model all import it, and
the logged model ships this package (with `pipeline/errors.py` and `models/`)
instead of all of `pipeline/`.

Modules: encoding (column values as strings and codes), tasks (one Task per
task: label encoding, loss, metrics, outputs, selection), specs (one ModelSpec
per model family, and the user's own nn.Module), preprocess (the fitted
Preprocessor), serving (the Scorer and the pyfunc), model_code (the pyfunc's
model file).
"""
