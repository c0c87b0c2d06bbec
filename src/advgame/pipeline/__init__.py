"""The machinery around the science: the dvc.yaml generator, what every stage shares, MLflow tracking and its model registry, training-seed experiments, the team server."""
