"""Configuration: one TOML file, ``MONITORING_*`` environment overrides, CLI flags.

Each package owns its frozen options dataclass; this module loads and validates them.
"""

from __future__ import annotations
