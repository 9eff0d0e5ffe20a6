"""SCD-MMPSR core: tasks, feature store, MCDM, semi-supervised training, metrics.

Pure PyTorch (+ torch-geometric); never imports ray or mlflow.
"""
