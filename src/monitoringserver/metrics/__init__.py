"""Metric storage interfaces (``api``) and their embedded implementation."""
