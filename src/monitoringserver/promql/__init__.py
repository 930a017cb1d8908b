"""The PromQL engine: ``Engine(querier, EngineOptions()).instant(query, time_ms)``."""

from monitoringserver.promql.engine import Engine, EngineOptions
from monitoringserver.promql.parser import format_query, parse
from monitoringserver.promql.values import QueryStats, Result, ResultSeries

__all__ = [
    "Engine",
    "EngineOptions",
    "QueryStats",
    "Result",
    "ResultSeries",
    "format_query",
    "parse",
]
