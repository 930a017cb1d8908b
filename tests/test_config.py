"""Configuration: file, environment, flags, and located errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitoringserver.cli import main
from monitoringserver.config import ConfigListError, load_config, parse_listen
from monitoringserver.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


def test_defaults() -> None:
    c = load_config(None, env={})
    assert c.server.data_dir == "./data"
    assert c.server.http_listen == "127.0.0.1:9940"
    assert c.server.grpc_listen == "127.0.0.1:9941"
    assert c.agent.local is True
    assert c.auth.enabled is True
    assert c.limits.max_body_bytes == 16 * 1024 * 1024
    assert c.storage.wal_fsync == "interval"


def test_precedence_file_env_flags(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[server]
data_dir = "/srv/m"
http_listen = "0.0.0.0:1000"
[storage]
wal_fsync = "never"
raw_retention_s = 86400
[logging]
format = "json"
""",
    )
    env = {
        "MONITORING_HTTP_LISTEN": "127.0.0.1:2000",
        "MONITORING_STORAGE__WAL_FSYNC": "always",
        "monitoring_auth__enabled": "false",
        "MONITORING_LIMITS__MAX_BODY_BYTES": "1048576",
        "MONITORING_STORAGE__MAX_SAMPLE_AGE_S": "none",
        "MONITORING_TOKEN": "ignored: not a [server] key",
        "OTHER": "x",
    }
    c = load_config(path, env=env, flags={"http_listen": "127.0.0.1:3000", "grpc_listen": None})
    assert c.server.data_dir == "/srv/m"
    assert c.server.http_listen == "127.0.0.1:3000"
    assert c.storage.wal_fsync == "always"
    assert c.storage.raw_retention_s == 86400.0
    assert c.storage.max_sample_age_s is None
    assert c.auth.enabled is False
    assert c.limits.max_body_bytes == 1048576
    assert c.logging.format == "json"
    c = load_config(path, env={}, flags={"agent.local": False})
    assert c.agent.local is False


def test_every_error_is_reported_with_its_location(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """[server]
http_listen = "nowhere"
colour = "blue"

[storage]
wal_fsync = "sometimes"
batch_rows = "many"
zstd_level = 99

[nosuch]
x = 1

[auth]
enabled = 1
""",
    )
    env = {"MONITORING_STORAGE__NOPE": "1", "MONITORING_BOGUS__X": "1"}
    with pytest.raises(ConfigListError) as info:
        load_config(path, env=env)
    errors = info.value.errors
    text = "\n".join(errors)
    assert f"{path}:2: server.http_listen: cannot accept server option http_listen" in text
    assert f"{path}:3: server.colour: unknown key" in text
    assert f"{path}:6: storage.wal_fsync: expected 'always' | 'interval' | 'never'" in text
    assert f"{path}:7: storage.batch_rows: expected int, got str 'many'" in text
    assert f"{path}:8: storage.zstd_level: cannot accept storage option zstd_level=99" in text
    assert f"{path}:10: unknown section [nosuch]" in text
    assert f"{path}:14: auth.enabled: expected bool, got int 1" in text
    assert "env MONITORING_STORAGE__NOPE: unknown key storage.nope" in text
    assert "env MONITORING_BOGUS__X: unknown section 'bogus'" in text
    assert len(errors) == 9


def test_cross_field_error_names_the_section(tmp_path: Path) -> None:
    path = write(tmp_path, "[limits]\nmax_body_bytes = 100\nmax_decompressed_bytes = 50\n")
    with pytest.raises(ConfigListError) as info:
        load_config(path, env={})
    assert any("max_decompressed_bytes" in e for e in info.value.errors)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("[server\n", "cannot parse TOML"), ("server = 3\n", "must be a table")],
)
def test_syntax_errors(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        load_config(write(tmp_path, text), env={})


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read configuration file"):
        load_config(tmp_path / "nope.toml", env={})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9940", ("127.0.0.1", 9940)),
        ("[::1]:0", ("::1", 0)),
        (":80", ("0.0.0.0", 80)),
        ("localhost:65535", ("localhost", 65535)),
    ],
)
def test_parse_listen(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["9940", "host:", "host:65536", "a:b:c", "[::1]"])
def test_parse_listen_bad(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_listen(text)


def test_check_config_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path, "[server]\nhttp_listen = '127.0.0.1:1'\n")
    assert main(["check-config", str(good)]) == 0
    assert capsys.readouterr().out.strip() == "ok"
    bad = tmp_path / "bad.toml"
    bad.write_text("[server]\nhttp_listen = 5\n[storage]\nwal_fsync = 'x'\n")
    assert main(["check-config", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:2: server.http_listen" in err
    assert f"{bad}:4: storage.wal_fsync" in err
    assert "2 error(s)" in err
