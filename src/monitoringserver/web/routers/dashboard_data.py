"""What the seed-003 dashboard shows, read from the metric store (and the node registry).

A *node* is any ``server_id`` label value with samples of the node metrics
(:data:`NODE_METRICS`) in the last ``window_s`` seconds: agents and seed-002 JSON posts
label their samples that way. The node registry, when given, adds host details and the
agent connection status; a node the registry does not know is ``online`` while its newest
sample is at most ``online_s`` old and ``stale`` after that; beyond ``window_s`` it leaves
the view (its history stays in the store).

The registry is loop-affine: :meth:`DashboardData.node_views` runs on the event loop and
its snapshot is passed to the other methods, which are synchronous and blocking (store
reads): call them off the event loop. Times are milliseconds since the Unix epoch;
``clock`` returns seconds.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from monitoringserver.logs.api import LogQuerier, LogQuery
from monitoringserver.metrics.api import MetricQuerier, SeriesData
from monitoringserver.model.labels import Labels, get, metric_name
from monitoringserver.model.matchers import Matcher, MatchOp
from monitoringserver.nodes.registry import NodeRegistry
from monitoringserver.nodes.types import NodeStatus, NodeView
from monitoringserver.web.routers.logs_ws import dashboard_messages

__all__ = ["NODE_METRICS", "SERVICE_METRIC", "DashboardData", "DashboardOptions", "iso"]

#: The per-node gauges the dashboard charts, in percent (0-100).
NODE_METRICS = ("cpu_usage_percent", "memory_usage_percent", "disk_usage_percent")
#: Seed 002's JSON example names the same gauges without the unit suffix.
ALIASES = {"cpu_usage": "cpu_usage_percent", "memory_usage": "memory_usage_percent",
           "disk_usage": "disk_usage_percent"}  # fmt: skip
_NAME_RE = "|".join((*NODE_METRICS, *ALIASES))


def _node_metric(labels: Labels) -> str:
    name = metric_name(labels)
    return ALIASES.get(name, name)


#: The agent's systemd collector: 1 for each unit's current state (``name``, ``state`` labels).
SERVICE_METRIC = "node_systemd_unit_state"


def iso(ms: int) -> str:
    """RFC 3339 UTC with milliseconds, e.g. ``2025-11-17T10:30:00.123Z``."""
    return (
        dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


@dataclass(frozen=True, slots=True)
class DashboardOptions:
    """``window_s``: how far back a node counts as present (seed 003 drops nodes silent
    for 10 min); ``online_s``: newest sample age that still reads ``online``;
    ``history_s``: how far back history is read; ``history_limit``: default and maximum
    points per metric; ``update_nodes``: most nodes whose history a WebSocket ``update``
    carries; ``cache_s``: how long one computed ``update`` is shared between clients."""

    window_s: float = 600.0
    online_s: float = 120.0
    history_s: float = 6 * 3600.0
    history_limit: int = 100
    update_nodes: int = 50
    cache_s: float = 1.0
    initial_logs: int = 200


@dataclass
class DashboardData:
    """Reads for the dashboard routes; thread-safe (the querier is)."""

    querier: MetricQuerier
    nodes: NodeRegistry | None = None
    logs: LogQuerier | None = None
    options: DashboardOptions = field(default_factory=DashboardOptions)
    clock: Callable[[], float] = time.time
    started_s: float = field(default_factory=time.time)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _cached: tuple[float, dict[str, Any]] | None = field(default=None, repr=False)

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _select(self, start_ms: int, end_ms: int, node_re: str | None) -> list[SeriesData]:
        matchers = [Matcher("__name__", MatchOp.RE, _NAME_RE)]
        if node_re is not None:
            matchers.append(Matcher("server_id", MatchOp.RE, node_re))
        else:
            matchers.append(Matcher("server_id", MatchOp.NEQ, ""))
        return self.querier.select(matchers, start_ms, end_ms)

    def node_views(self) -> dict[str, NodeView]:
        """A snapshot of the registry (on the event loop); empty without a registry."""
        if self.nodes is None:
            return {}
        return {v.node_id: v for v in self.nodes.list(include_stale=True)}

    def metrics(self, views: Mapping[str, NodeView] | None = None) -> dict[str, dict[str, Any]]:
        """Latest value per node and metric, with status and last-seen time (ms);
        ``views`` (from :meth:`node_views`) adds registry details."""
        now = self.now_ms()
        start = now - int(self.options.window_s * 1000)
        out: dict[str, dict[str, Any]] = {}
        newest: dict[tuple[str, str], int] = {}
        for s in self._select(start, now, None):
            if not len(s.ts_ms):
                continue
            node, name = get(s.labels, "server_id"), _node_metric(s.labels)
            ts, value = int(s.ts_ms[-1]), float(s.values[-1])
            entry = out.setdefault(node, {"node_id": node, "last_seen_ms": ts})
            entry["last_seen_ms"] = max(entry["last_seen_ms"], ts)
            # Several series of one metric (e.g. one per disk): the newest wins, then the highest.
            prev = newest.get((node, name))
            if prev is None or ts > prev or (ts == prev and value > entry[name]):
                newest[(node, name)] = ts
                entry[name] = value if np.isfinite(value) else None
        services = self._services(start, now, set(out))
        for node, entry in out.items():
            for name in NODE_METRICS:
                entry.setdefault(name, None)
            entry["services"] = services.get(node, {})
            self._enrich(entry, now, (views or {}).get(node))
        return dict(sorted(out.items()))

    def _services(self, start: int, end: int, nodes: set[str]) -> dict[str, dict[str, str]]:
        """``{node: {unit: state}}``: per unit, the state whose newest sample is 1."""
        matchers = [Matcher.eq("__name__", SERVICE_METRIC), Matcher("server_id", MatchOp.NEQ, "")]
        best: dict[tuple[str, str], tuple[int, str]] = {}
        for s in self.querier.select(matchers, start, end):
            node, unit = get(s.labels, "server_id"), get(s.labels, "name")
            if node not in nodes or not unit or not len(s.ts_ms) or s.values[-1] != 1.0:
                continue
            ts = int(s.ts_ms[-1])
            if (node, unit) not in best or ts > best[(node, unit)][0]:
                best[(node, unit)] = (ts, get(s.labels, "state"))
        out: dict[str, dict[str, str]] = {}
        for (node, unit), (_ts, state) in sorted(best.items()):
            out.setdefault(node, {})[unit] = state
        return out

    def _enrich(self, entry: dict[str, Any], now: int, view: NodeView | None) -> None:
        age_ms = now - entry["last_seen_ms"]
        status = NodeStatus.ONLINE if age_ms <= self.options.online_s * 1000 else NodeStatus.STALE
        entry["hostname"] = ""
        entry["registered"] = False
        if view is not None:
            entry["registered"] = True
            entry["hostname"] = view.info.hostname
            entry["os"] = view.info.os
            entry["cpu_count"] = view.info.cpu_count
            entry["memory_bytes"] = view.info.memory_bytes
            entry["agent_version"] = view.info.agent_version
            entry["last_seen_ms"] = max(entry["last_seen_ms"], view.last_seen_ms)
            status = view.status
        entry["status"] = status.value
        entry["last_seen"] = iso(entry["last_seen_ms"])

    def history(self, node_id: str, limit: int | None = None) -> dict[str, Any]:
        """The last ``limit`` points of each node metric: per-metric arrays (``ts_ms``,
        ``values``) and seed-003 rows merged by timestamp (``timestamp``, ``ts_ms`` and
        one key per metric, ``null`` where that metric has no point)."""
        return self._histories([node_id], limit)[node_id]

    def _histories(self, node_ids: list[str], limit: int | None) -> dict[str, dict[str, Any]]:
        n = min(limit or self.options.history_limit, self.options.history_limit)
        now = self.now_ms()
        start = now - int(self.options.history_s * 1000)
        per: dict[str, dict[str, SeriesData]] = {node: {} for node in node_ids}
        if node_ids:
            node_re = "|".join(_re_escape(x) for x in node_ids)
            for s in self._select(start, now, node_re):
                if not len(s.ts_ms):
                    continue
                node, name = get(s.labels, "server_id"), _node_metric(s.labels)
                prev = per.setdefault(node, {}).get(name)
                # Like metrics(): the series with the newest sample, then the highest value.
                if prev is None or (s.ts_ms[-1], s.values[-1]) > (prev.ts_ms[-1], prev.values[-1]):
                    per[node][name] = s
        out: dict[str, dict[str, Any]] = {}
        for node in node_ids:
            metrics: dict[str, dict[str, list[Any]]] = {}
            rows: dict[int, dict[str, Any]] = {}
            for name in NODE_METRICS:
                found = per[node].get(name)
                ts: list[int] = found.ts_ms[-n:].tolist() if found is not None else []
                raw: list[float] = found.values[-n:].tolist() if found is not None else []
                vals = [v if math.isfinite(v) else None for v in raw]  # staleness NaN -> null
                metrics[name] = {"ts_ms": ts, "values": vals}
                for t, v in zip(ts, vals, strict=True):
                    rows.setdefault(t, {"timestamp": iso(t), "ts_ms": t})[name] = v
            merged = [rows[t] for t in sorted(rows)[-n:]]
            for row in merged:
                for name in NODE_METRICS:
                    row.setdefault(name, None)
            out[node] = {"node_id": node, "limit": n, "metrics": metrics, "history": merged}
        return out

    def stats(
        self, websocket_clients: int = 0, views: Mapping[str, NodeView] | None = None
    ) -> dict[str, Any]:
        """Cluster statistics: nodes by status, store size, uptime (s), live clients."""
        metrics = self.metrics(views)
        st = self.querier.stats()
        by_status = {s.value: 0 for s in NodeStatus}
        for entry in metrics.values():
            by_status[entry["status"]] = by_status.get(entry["status"], 0) + 1
        out: dict[str, Any] = {
            "active_nodes": by_status[NodeStatus.ONLINE.value],
            "total_nodes": len(metrics),
            "nodes_by_status": by_status,
            "registered_nodes": len(views or {}),
            "total_services": sum(len(e["services"]) for e in metrics.values()),
            "series": st.series,
            "head_samples": st.head_samples,
            "samples": st.head_samples + sum(r.samples for r in st.resolutions.values()),
            "wal_bytes": st.wal_bytes,
            "uptime_s": round(self.clock() - self.started_s, 3),
            "websocket_clients": websocket_clients,
            "timestamp": iso(self.now_ms()),
        }
        if self.logs is not None:
            ls = self.logs.stats()
            out["log_lines"] = ls.head_lines + ls.archived_lines
        return out

    def update(self, views: Mapping[str, NodeView] | None = None) -> dict[str, Any]:
        """The ``data`` of a seed-003 ``update``: latest metrics and the history of the first
        ``update_nodes`` nodes; computed at most once per ``cache_s`` for all clients."""
        now = self.clock()
        with self._lock:
            if self._cached is not None and now - self._cached[0] < self.options.cache_s:
                return self._cached[1]
        metrics = self.metrics(views)
        shown = list(metrics)[: self.options.update_nodes]
        hist = self._histories(shown, None)
        data = {"metrics": {"nodes": metrics}, "history": hist}
        with self._lock:
            self._cached = (now, data)
        return data

    def initial(self, views: Mapping[str, NodeView] | None = None) -> dict[str, Any]:
        """The ``data`` of the seed-003 ``initial`` message."""
        data = self.update(views)
        logs: list[dict[str, object]] = []
        sources: dict[str, list[str]] = {"nodes": [], "loggers": [], "log_levels": []}
        if self.logs is not None:
            now = self.now_ms()
            start = now - 86_400_000
            page = self.logs.query(
                LogQuery(start_ms=start, end_ms=now, limit=self.options.initial_logs)
            )
            for msg in dashboard_messages(page.batch):
                for line in msg["logs"]:  # type: ignore[attr-defined]
                    line["node_id"] = msg["node_id"]
                    logs.append(line)
            logs.sort(key=lambda line: int(line["ts_ms"]))  # type: ignore[call-overload]
            sources = {
                "nodes": self.logs.label_values("server_id", start, now),
                "loggers": self.logs.label_values("logger", start, now),
                "log_levels": self.logs.label_values("level", start, now),
            }
        return {
            "metrics": data["metrics"],
            "history": data["history"],
            "logs": logs,
            "log_sources": sources,
        }


def _re_escape(value: str) -> str:
    """Escape RE2 metacharacters (``re.escape`` also escapes characters RE2 rejects)."""
    return "".join("\\" + c if c in r"\.+*?()|[]{}^$" else c for c in value)
