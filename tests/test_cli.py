"""The CLI without a running server: version, token commands in direct mode, logging."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from monitoringserver import __version__
from monitoringserver.cli import main
from monitoringserver.server import DataDirLock
from monitoringserver.util.logging import LoggingOptions, configure_logging, redact


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version"]) == 0
    assert capsys.readouterr().out.strip() == __version__


def test_python_dash_m() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "monitoringserver", "version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == __version__


def test_token_commands_open_the_database_directly(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = str(data_dir)
    assert (
        main(
            [
                "token",
                "create",
                "--name",
                "ci",
                "--scope",
                "monitoring:write",
                "--scope",
                "monitoring:read",
                "--data-dir",
                d,
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    secret = captured.out.strip()
    assert secret.startswith("mst_")
    assert "shown once" in captured.err
    assert main(["token", "list", "--json", "--data-dir", d]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [t["name"] for t in listed] == ["ci"]
    assert listed[0]["scopes"] == ["monitoring:read", "monitoring:write"]
    assert secret not in json.dumps(listed)
    assert main(["token", "list", "--data-dir", d]) == 0
    assert "ci" in capsys.readouterr().out
    assert main(["token", "revoke", "ci", "--data-dir", d]) == 0
    assert "revoked token 'ci'" in capsys.readouterr().out
    assert main(["token", "revoke", "ci", "--data-dir", d]) == 1
    assert "no active token" in capsys.readouterr().err
    assert main(["token", "list", "--all", "--data-dir", d]) == 0
    assert "ci" in capsys.readouterr().out
    assert main(["token", "create", "--name", "x", "--scope", "root", "--data-dir", d]) == 1
    assert "cannot accept scope 'root'" in capsys.readouterr().err


def test_token_commands_with_a_locked_dir_and_no_server(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lock = DataDirLock(data_dir)
    assert lock.try_acquire()
    try:
        assert main(["token", "list", "--data-dir", str(data_dir)]) == 1
        assert "http.addr is missing" in capsys.readouterr().err
        (data_dir / "http.addr").write_text("127.0.0.1:9\n")
        assert main(["token", "list", "--data-dir", str(data_dir)]) == 1
        assert "pass --token" in capsys.readouterr().err
        assert main(["token", "list", "--token", "mst_x", "--data-dir", str(data_dir)]) == 1
        assert "cannot reach the running server" in capsys.readouterr().err
    finally:
        lock.release()


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_logging_formats_redact_secrets(fmt: str) -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging(LoggingOptions(level="debug", format=fmt), stream)  # type: ignore[arg-type]
        logging.getLogger("t").info(
            "token mst_abcdefghijklmnop used", extra={"auth": "Bearer abcdefghijkl", "n": 3}
        )
        try:
            raise ValueError("boom mst_abcdefghijklmnop")
        except ValueError:
            logging.getLogger("t").exception("failed")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    text = stream.getvalue()
    assert "abcdefghijklmnop" not in text
    assert "[REDACTED]" in text
    if fmt == "json":
        first = json.loads(text.splitlines()[0])
        assert first["level"] == "info"
        assert first["n"] == 3
        assert first["logger"] == "t"


def test_redact_leaves_ordinary_text() -> None:
    assert redact("cpu_usage 70.5") == "cpu_usage 70.5"


def test_logging_options_validate() -> None:
    from monitoringserver.errors import ConfigError

    with pytest.raises(ConfigError):
        LoggingOptions(level="loud")
    with pytest.raises(ConfigError):
        LoggingOptions(format="xml")  # type: ignore[arg-type]


def test_monitoring_config_names_the_file(
    data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text(f'[server]\ndata_dir = "{data_dir}"\n')
    monkeypatch.setenv("MONITORING_CONFIG", str(conf))
    assert main(["token", "create", "--name", "viaenv", "--scope", "read"]) == 0
    capsys.readouterr()
    assert main(["token", "list", "--json", "--data-dir", str(data_dir)]) == 0
    assert "viaenv" in capsys.readouterr().out
