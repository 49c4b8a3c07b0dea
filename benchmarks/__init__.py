"""Reproducible benchmarks of the playbooks runtime: ``python -m benchmarks``."""
