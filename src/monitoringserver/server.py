"""The composition root: builds every component from the configuration and runs them."""

from __future__ import annotations
