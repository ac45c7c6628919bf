"""Entrypoints, the stage chain, caching and MLflow runs."""
