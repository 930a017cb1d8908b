"""Command line entry point (``monitoring-server``; also ``python -m monitoringserver``).

Subcommands: ``serve``, ``check-config FILE``, ``token create|list|revoke``, ``version``.

Token commands work whether or not a server runs on the data directory: DuckDB allows one
process per file, so when the server holds ``<data-dir>/server.lock`` they go through its
HTTP admin API (address from ``<data-dir>/http.addr``, credential from ``--token``,
``MONITORING_TOKEN`` or ``<data-dir>/admin.token``); otherwise they take the lock
themselves and open the database directly.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import httpx

from monitoringserver import __version__
from monitoringserver.config import Config, load_config
from monitoringserver.errors import ConfigError, MonitoringError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="monitoring-server", description="Metrics, logs, alerts and dashboards in one process."
    )
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--config", type=Path, help="TOML configuration file")
        sp.add_argument("--data-dir", help="data directory (default ./data)")

    serve = sub.add_parser("serve", help="run the server")
    common(serve)
    serve.add_argument("--http-listen", metavar="HOST:PORT", help="default 127.0.0.1:9940")
    serve.add_argument("--grpc-listen", metavar="HOST:PORT", help="default 127.0.0.1:9941")
    serve.add_argument("--no-local-agent", action="store_true", help="do not run the local agent")

    check = sub.add_parser("check-config", help="validate a configuration file")
    check.add_argument("file", type=Path)

    token = sub.add_parser("token", help="manage API tokens")
    tsub = token.add_subparsers(dest="subcommand", required=True)
    create = tsub.add_parser("create", help="create a token and print it once")
    create.add_argument("--name", required=True)
    create.add_argument(
        "--scope",
        action="append",
        required=True,
        help="monitoring:read, monitoring:write or admin (repeatable)",
    )
    lst = tsub.add_parser("list", help="list tokens (never their secrets)")
    lst.add_argument("--all", action="store_true", help="include revoked tokens")
    lst.add_argument("--json", action="store_true", help="print JSON")
    revoke = tsub.add_parser("revoke", help="revoke a token by name or id")
    revoke.add_argument("name_or_id")
    for sp in (create, lst, revoke):
        common(sp)
        sp.add_argument("--token", help="admin token for a running server (else admin.token)")

    sub.add_parser("version", help="print the version")
    return p


def _config(args: argparse.Namespace, **flags: Any) -> Config:
    """``--config`` or else ``MONITORING_CONFIG``, then the environment and ``flags``."""
    path = args.config or (
        Path(os.environ["MONITORING_CONFIG"]) if os.environ.get("MONITORING_CONFIG") else None
    )
    return load_config(path, flags={"data_dir": args.data_dir, **flags})


def _serve(args: argparse.Namespace) -> int:
    from monitoringserver.server import run_server
    from monitoringserver.util.logging import configure_logging

    flags: dict[str, Any] = {"http_listen": args.http_listen, "grpc_listen": args.grpc_listen}
    if args.no_local_agent:
        flags["agent.local"] = False
    config = _config(args, **flags)
    configure_logging(config.logging)
    return run_server(config)


def _check_config(args: argparse.Namespace) -> int:
    try:
        load_config(args.file, env={})
    except ConfigError as exc:
        errors = getattr(exc, "errors", [str(exc)])
        for line in errors:
            print(line, file=sys.stderr)
        print(f"{len(errors)} error(s)", file=sys.stderr)
        return 1
    print("ok")
    return 0


class _Tokens(Protocol):
    def create(self, name: str, scopes: list[str]) -> tuple[dict[str, Any], str]: ...
    def list(self, include_revoked: bool) -> list[dict[str, Any]]: ...
    def revoke(self, name_or_id: str) -> dict[str, Any]: ...
    def close(self) -> None: ...


class _DirectTokens:
    """Opens the database itself; holds the data-directory lock meanwhile."""

    def __init__(self, data_dir: Path, lock: Any) -> None:
        from monitoringserver.auth.tokens import TokenStore
        from monitoringserver.pipeline.metric_store import DATABASE_FILE
        from monitoringserver.storage.db import Database

        self._lock = lock
        try:
            self._db = Database(data_dir / DATABASE_FILE)
        except BaseException:
            lock.release()
            raise
        self._store = TokenStore(self._db)
        self._store.open()

    def create(self, name: str, scopes: list[str]) -> tuple[dict[str, Any], str]:
        info, secret = self._store.create(name, scopes)
        return info.to_json(), secret

    def list(self, include_revoked: bool) -> list[dict[str, Any]]:
        return [t.to_json() for t in self._store.list(include_revoked=include_revoked)]

    def revoke(self, name_or_id: str) -> dict[str, Any]:
        return self._store.revoke(name_or_id).to_json()

    def close(self) -> None:
        self._db.close()
        self._lock.release()


class _HttpTokens:
    """Talks to the running server's ``/api/v1/admin/tokens``."""

    def __init__(self, base_url: str, token: str) -> None:
        self._client = httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30.0
        )

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            r = self._client.request(method, "/api/v1/admin/tokens" + path, **kw)
        except httpx.HTTPError as exc:
            raise MonitoringError(f"cannot reach the running server: {exc}") from exc
        try:
            doc = r.json()
        except ValueError:
            doc = {"error": r.text[:200]}
        if r.status_code >= 400:
            raise MonitoringError(str(doc.get("error", f"HTTP {r.status_code}")))
        return doc["data"]

    def create(self, name: str, scopes: list[str]) -> tuple[dict[str, Any], str]:
        data = self._call("POST", "", json={"name": name, "scopes": scopes})
        return data, str(data.pop("token"))

    def list(self, include_revoked: bool) -> list[dict[str, Any]]:
        params = {"include_revoked": "true"} if include_revoked else {}
        return list(self._call("GET", "", params=params))

    def revoke(self, name_or_id: str) -> dict[str, Any]:
        return dict(self._call("DELETE", "/" + name_or_id))

    def close(self) -> None:
        self._client.close()


def _token_backend(args: argparse.Namespace) -> _Tokens:
    from monitoringserver.server import ADMIN_TOKEN_FILE, HTTP_ADDR_FILE, DataDirLock

    data_dir = _config(args).data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = DataDirLock(data_dir)
    if lock.try_acquire():
        return _DirectTokens(data_dir, lock)
    try:
        addr = (data_dir / HTTP_ADDR_FILE).read_text().strip()
    except OSError as exc:
        raise MonitoringError(
            f"cannot manage tokens: a server (pid {lock.holder()}) holds {data_dir} but "
            f"{HTTP_ADDR_FILE} is missing; is it still starting?"
        ) from exc
    secret = args.token or os.environ.get("MONITORING_TOKEN", "")
    if not secret:
        try:
            secret = (data_dir / ADMIN_TOKEN_FILE).read_text().strip()
        except OSError as exc:
            raise MonitoringError(
                "cannot manage tokens through the running server: pass --token or set "
                f"MONITORING_TOKEN (no {data_dir / ADMIN_TOKEN_FILE})"
            ) from exc
    return _HttpTokens(f"http://{addr}", secret)


def _when(ms: object) -> str:
    if not isinstance(ms, int):
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _token(args: argparse.Namespace) -> int:
    backend = _token_backend(args)
    try:
        if args.subcommand == "create":
            info, secret = backend.create(args.name, args.scope)
            print(
                f"created token {info['name']!r} (id {info['id']}, scopes "
                f"{' '.join(info['scopes'])}); it is shown once:",
                file=sys.stderr,
            )
            print(secret)
        elif args.subcommand == "list":
            tokens = backend.list(args.all)
            if args.json:
                print(json.dumps(tokens, indent=2))
            else:
                print(
                    f"{'ID':<14}{'NAME':<24}{'SCOPES':<36}{'CREATED':<22}{'LAST USED':<22}REVOKED"
                )
                for t in tokens:
                    print(
                        f"{t['id']:<14}{t['name']:<24}{' '.join(t['scopes']):<36}"
                        f"{_when(t['created_ms']):<22}{_when(t['last_used_ms']):<22}"
                        f"{_when(t['revoked_ms'])}"
                    )
        else:
            info = backend.revoke(args.name_or_id)
            print(f"revoked token {info['name']!r} (id {info['id']})")
    finally:
        backend.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "version":
            print(__version__)
            return 0
        if args.command == "check-config":
            return _check_config(args)
        if args.command == "serve":
            return _serve(args)
        return _token(args)
    except MonitoringError as exc:
        print(f"monitoring-server: {exc}", file=sys.stderr)
        return 1
