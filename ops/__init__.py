"""Pure functions and IO helpers: no Ray, no MLflow, no pipelines or workflows imports."""
