"""Hyperparameter tuning: Optuna studies whose trials are Horovod training runs (jobs/tune.py)."""
