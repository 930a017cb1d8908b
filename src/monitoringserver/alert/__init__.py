"""alert package."""
