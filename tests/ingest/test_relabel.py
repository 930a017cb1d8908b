"""Relabelling rules as a table, and scrape-config parsing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from monitoringserver.errors import ConfigError
from monitoringserver.ingest.scrape.config import (
    ScrapeOptions,
    load_scrape_file,
    parse_duration_s,
    parse_scrape_configs,
)
from monitoringserver.ingest.scrape.relabel import parse_relabel_configs, relabel

BASE = {"__name__": "node_cpu", "__address__": "h1:9100", "mode": "idle", "job": "node"}


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        ([], BASE),
        (
            [{"source_labels": ["__address__"], "regex": "(.*):\\d+", "target_label": "host"}],
            {**BASE, "host": "h1"},
        ),
        (
            [
                {
                    "source_labels": ["mode", "job"],
                    "separator": "-",
                    "target_label": "x",
                    "replacement": "${1}!",
                }
            ],
            {**BASE, "x": "idle-node!"},
        ),
        ([{"source_labels": ["nope"], "regex": "a", "target_label": "x"}], BASE),
        (
            [{"source_labels": ["mode"], "target_label": "mode", "replacement": ""}],
            {k: v for k, v in BASE.items() if k != "mode"},
        ),
        ([{"action": "keep", "source_labels": ["mode"], "regex": "idle|user"}], BASE),
        ([{"action": "keep", "source_labels": ["mode"], "regex": "user"}], None),
        ([{"action": "drop", "source_labels": ["__name__"], "regex": "node_.*"}], None),
        ([{"action": "drop", "source_labels": ["__name__"], "regex": "node"}], BASE),
        (
            [
                {
                    "action": "hashmod",
                    "source_labels": ["__address__"],
                    "modulus": 4,
                    "target_label": "shard",
                }
            ],
            {**BASE, "shard": "0"},
        ),
        (
            [{"action": "labelmap", "regex": "__(address)__", "replacement": "addr_$1"}],
            {**BASE, "addr_address": "h1:9100"},
        ),
        (
            [{"action": "labeldrop", "regex": "mode|job"}],
            {"__name__": "node_cpu", "__address__": "h1:9100"},
        ),
        (
            [{"action": "labelkeep", "regex": "__.*"}],
            {"__name__": "node_cpu", "__address__": "h1:9100"},
        ),
        (
            [{"action": "uppercase", "source_labels": ["mode"], "target_label": "M"}],
            {**BASE, "M": "IDLE"},
        ),
        (
            [{"action": "lowercase", "source_labels": ["job"], "target_label": "j"}],
            {**BASE, "j": "node"},
        ),
        ([{"action": "keepequal", "source_labels": ["job"], "target_label": "mode"}], None),
        ([{"action": "dropequal", "source_labels": ["job"], "target_label": "mode"}], BASE),
        ([{"source_labels": ["mode"], "target_label": "${1}_x"}], {**BASE, "idle_x": "idle"}),
    ],
)
def test_relabel(rules: list[dict[str, Any]], expected: dict[str, str] | None) -> None:
    assert relabel(BASE, parse_relabel_configs(rules, "t")) == expected


@pytest.mark.parametrize(
    "rules",
    [
        "notalist",
        [1],
        [{"action": "explode"}],
        [{"regex": "("}],
        [{"action": "hashmod", "target_label": "x"}],
        [{"action": "replace"}],
        [{"source_labels": "a", "target_label": "x"}],
    ],
)
def test_relabel_config_errors(rules: Any) -> None:
    with pytest.raises(ConfigError, match="cannot load t"):
        parse_relabel_configs(rules, "t")


@pytest.mark.parametrize(
    ("text", "seconds"), [("15s", 15), ("1m30s", 90), ("500ms", 0.5), (2, 2), ("1h", 3600)]
)
def test_durations(text: Any, seconds: float) -> None:
    assert parse_duration_s(text, "x") == seconds


@pytest.mark.parametrize("text", ["", "15", "1x", "s", "-1s"])
def test_duration_errors(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_duration_s(text, "x")


def test_scrape_file(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("secret\n")
    (tmp_path / "s.yml").write_text(f"""
global:
  scrape_interval: 30s
scrape_configs:
  - job_name: node
    scrape_timeout: 5s
    metrics_path: /m
    scheme: https
    params: {{collect: [cpu, mem]}}
    honor_labels: true
    basic_auth: {{username: u, password_file: {tmp_path / "pw"}}}
    tls_config: {{insecure_skip_verify: true}}
    static_configs: [{{targets: ["a:1"], labels: {{env: prod}}}}]
    file_sd_configs: [{{files: ["{tmp_path}/*.json"]}}]
  - job_name: other
    authorization: {{credentials: tok}}
""")
    node, other = load_scrape_file(tmp_path / "s.yml")
    assert node.scrape_interval_s == 30
    assert node.scrape_timeout_s == 5
    assert node.params == (("collect", ("cpu", "mem")),)
    assert node.basic_auth == ("u", "secret")
    assert node.insecure_skip_verify
    assert node.static_configs[0].labels == (("env", "prod"),)
    assert other.bearer_token == "tok"
    assert other.scrape_timeout_s == 10
    assert parse_scrape_configs(None) == ()


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "mapping at the top"),
        ({"scrape_configs": {"a": 1}}, "must be a list"),
        ({"scrape_configs": [1]}, "expected a mapping"),
        ({"scrape_configs": [{}]}, "job_name is required"),
        ({"scrape_configs": [{"job_name": "a", "typo": 1}]}, "unknown keys"),
        ({"scrape_configs": [{"job_name": "a"}, {"job_name": "a"}]}, "duplicate"),
        ({"scrape_configs": [{"job_name": "a", "scheme": "ftp"}]}, "scheme"),
        (
            {
                "scrape_configs": [
                    {"job_name": "a", "scrape_interval": "1s", "scrape_timeout": "2s"}
                ]
            },
            "longer",
        ),
        ({"scrape_configs": [{"job_name": "a", "authorization": {"type": "Basic"}}]}, "Bearer"),
        ({"scrape_configs": [{"job_name": "a", "static_configs": [{"targets": "x"}]}]}, "list"),
        ({"scrape_configs": [{"job_name": "a", "file_sd_configs": [{"files": []}]}]}, "list"),
        (
            {"scrape_configs": [{"job_name": "a", "basic_auth": {"password_file": "/nope/x"}}]},
            "password_file",
        ),
    ],
)
def test_scrape_config_errors(doc: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_scrape_configs(doc)


def test_options_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        ScrapeOptions(file_sd_check_interval_s=0)
    with pytest.raises(ConfigError):
        ScrapeOptions(max_scrape_bytes=0)
    with pytest.raises(ConfigError, match="cannot load scrape config"):
        load_scrape_file(tmp_path / "missing.yml")
