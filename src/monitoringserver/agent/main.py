"""``node-agent``: the agent's command line and composition root.

    node-agent --server HOST:PORT --token-file F [--node-id ID]
               [--interval SECONDS|adaptive] [--spool-dir D] [--config agent.toml]
               [--metrics-listen HOST:PORT|unix:/path] [--service NAME ...]
    node-agent status [--spool-dir D] [--config agent.toml] [--json]

SIGTERM/SIGINT stop the agent cleanly; undelivered batches stay in the spool.

Memory: the configuration is read before anything heavy is imported, so the process
loads only what its collectors need and never ``ssl`` (see ``agent/memory.py``);
start-up objects are frozen and freed heap pages are returned to the kernel after
start-up and after every cycle.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from monitoringserver.agent import memory
from monitoringserver.agent.config import AgentConfig, ConfigError, load_config

if TYPE_CHECKING:
    from monitoringserver.agent.agent import Agent

__all__ = ["main"]

_log = logging.getLogger("monitoringserver.agent")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="node-agent", description="monitoringserver node agent")
    p.add_argument("command", nargs="?", default="run", choices=["run", "status"])
    p.add_argument("--config", type=Path, help="agent.toml")
    p.add_argument("--server", help="HOST:PORT of the server's gRPC listener")
    p.add_argument("--token-file", type=Path, help="file holding the bearer token")
    p.add_argument("--node-id", help="node id (default: the hostname)")
    p.add_argument("--interval", help="seconds (>= 1) or 'adaptive' (30-300 s)")
    p.add_argument("--spool-dir", type=Path, help="state and spool directory")
    p.add_argument("--metrics-listen", help="serve /metrics on HOST:PORT or unix:/path")
    p.add_argument("--service", action="append", help="allowlisted systemd service (repeatable)")
    p.add_argument("--tls", action="store_true", default=None, help="use TLS")
    p.add_argument("--ca-file", type=Path, help="CA bundle for TLS")
    p.add_argument("--json", action="store_true", help="status: print JSON")
    p.add_argument("--log-level", default="INFO")
    return p


def _config(args: argparse.Namespace) -> AgentConfig:
    return load_config(
        args.config,
        server=args.server,
        token_file=args.token_file,
        node_id=args.node_id,
        interval=args.interval,
        spool_dir=args.spool_dir,
        exporter_listen=args.metrics_listen,
        service_allowlist=tuple(args.service) if args.service else None,
        tls=args.tls,
        ca_file=args.ca_file,
    )


def _status(cfg: AgentConfig, as_json: bool) -> int:
    from monitoringserver.agent.agent import read_status

    data = read_status(cfg.state_dir)
    if data is None:
        print(f"node-agent: no status in {cfg.state_dir} (is the agent running?)", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(data, indent=2, sort_keys=True))
        return 0
    width = max(len(k) for k in data)
    for key in sorted(data):
        print(f"{key:<{width}}  {data[key]}")
    return 0


def _build(cfg: AgentConfig, *, own_process: bool) -> Agent:
    """The agent with the extra loops ``cfg`` asks for (each module imported only then).

    ``own_process``: the agent is the whole process (``node-agent``), so it may tune
    the process-wide heap (garbage collector, ``malloc_trim``) for its own size.
    """
    from monitoringserver.agent.agent import Agent

    agent = Agent(cfg)
    if cfg.exporter_listen:
        from monitoringserver.agent.exporter import serve_exporter

        agent.extra_tasks.append(lambda: serve_exporter(agent, cfg.exporter_listen))
    if cfg.log_files or cfg.journald:
        from monitoringserver.agent.logship import log_tasks

        agent.extra_tasks.extend(log_tasks(agent))
    if own_process:
        agent.after_cycle.append(memory.release_memory)
        memory.freeze_startup_objects()
        memory.release_memory()
    return agent


async def _run(cfg: AgentConfig, *, own_process: bool = False) -> None:
    import asyncio
    import contextlib
    import signal

    agent = _build(cfg, own_process=own_process)
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    _log.info(
        "node-agent %s reporting to %s (interval %s)",
        cfg.node_id,
        cfg.server,
        "adaptive" if cfg.interval_s is None else f"{cfg.interval_s:g} s",
    )
    try:
        await agent.run()
    except asyncio.CancelledError:
        _log.info("node-agent stopping")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(agent.aclose(), 5)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        cfg = _config(args)
        if args.command == "status":
            return _status(cfg, args.json)
        memory.keep_ssl_out()
        memory.limit_malloc_arenas()
        import asyncio

        asyncio.run(_run(cfg, own_process=True))
    except ConfigError as exc:
        print(f"node-agent: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
