"""promql package."""
