"""Experiments that run beside the production chain: they read its artifacts or feed it a base model, and
are registered as a chain of their own (workflows/registry.py)."""
