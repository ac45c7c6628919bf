"""Model definitions and wrappers: pure torch/transformers, no Ray, MLflow or filesystem layout."""
