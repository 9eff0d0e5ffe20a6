"""Hyperparameter search on Ray Tune + Optuna with MLflow tracking: search spaces,
the trial function, sweeps, leaderboards and promotion.

Glue between ``scd_core`` (which never imports ray or mlflow) and the thin entry points
in ``ray_jobs/``.
"""
