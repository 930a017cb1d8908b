"""The standalone agent's memory measures: what it keeps out, what it gives back."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from monitoringserver.agent import memory
from monitoringserver.agent.collectors.containers import container_socket
from monitoringserver.agent.config import AgentConfig, load_config


def _python(code: str, cwd: Path | None = None) -> str:
    """Run ``code`` in a fresh interpreter (nothing imported yet) and return stdout."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_ssl_kept_out_of_a_fresh_process_that_reads_a_container_engine(
    tmp_path: Path,
) -> None:
    # The standalone agent blocks ssl for good: asyncio and the container collector
    # (http.client on a unix socket) must both work without it.
    out = _python(
        "import sys\n"
        "from monitoringserver.agent import memory\n"
        "assert memory.keep_ssl_out()\n"
        "import asyncio\n"
        "assert memory.keep_ssl_out()  # still in place\n"
        "async def f():\n"
        "    return 7\n"
        "assert asyncio.run(f()) == 7  # asyncio works without ssl\n"
        "from pathlib import Path\n"
        "from monitoringserver.agent.collectors.containers import ContainerCollector\n"
        "from monitoringserver.agent.metrics import Emitter\n"
        "from tests.agent.unix_http import serve\n"
        f"sock = Path({str(tmp_path / 'engine.sock')!r})\n"
        "c = ContainerCollector(sock)\n"
        "out = Emitter({})\n"
        "with serve(sock, {'/containers/json': [{'Id': 'a1', 'State': 'running'}]}):\n"
        "    c.collect(out)\n"
        "c.close()\n"
        "print(out.value('container_up'), sys.modules['ssl'], 'httpx' in sys.modules)\n",
        cwd=Path(__file__).parents[2],
    )
    assert out == "1.0 None False"


def test_ssl_block_leaves_a_process_that_has_asyncio_alone() -> None:
    # The test runner imported asyncio (and ssl): the block must not apply here.
    assert "asyncio" in sys.modules
    assert memory.keep_ssl_out() is False
    assert sys.modules.get("ssl") is not None


def test_ssl_block_in_place_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ssl", None)  # as keep_ssl_out leaves it
    assert memory.keep_ssl_out() is True


def test_release_memory_trims_on_glibc() -> None:
    import platform

    expected = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert memory.release_memory() is expected


def test_freeze_startup_objects_moves_objects_to_the_permanent_generation() -> None:
    import gc

    try:
        memory.freeze_startup_objects()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


@pytest.mark.parametrize(
    ("containers", "socket", "expected"),
    [
        (False, "/run/x.sock", None),
        (True, "/run/x.sock", Path("/run/x.sock")),  # configured: used even before it exists
    ],
)
def test_container_socket(containers: bool, socket: str, expected: Path | None) -> None:
    cfg = AgentConfig(containers=containers, container_socket=Path(socket))
    assert container_socket(cfg) == expected


def test_container_socket_default_is_first_existing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    sock = tmp_path / "podman/podman.sock"
    cfg = AgentConfig(containers=True)
    found = container_socket(cfg)
    assert found is None or found != sock  # absent under tmp_path
    sock.parent.mkdir()
    sock.touch()
    found = container_socket(cfg)
    assert found is not None
    assert found in (Path("/run/podman/podman.sock"), sock)


async def test_own_process_agent_releases_memory_after_each_cycle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gc

    from monitoringserver.agent import main as agent_main

    calls: list[str] = []

    def trim() -> bool:
        calls.append("trim")
        return True

    monkeypatch.setattr(memory, "release_memory", trim)
    monkeypatch.setattr(memory, "freeze_startup_objects", lambda: calls.append("freeze"))
    cfg = load_config(
        None,
        server="127.0.0.1:9",  # nothing listens: batches are spooled
        node_id="n1",
        interval="1",
        spool_dir=tmp_path / "state",
        system=False,
        hardware=False,
        containers=False,
        processes=False,
        gpu=False,
        control=False,
    )
    agent = agent_main._build(cfg, own_process=True)
    assert calls == ["freeze", "trim"]
    task = asyncio.ensure_future(agent.collect_loop())
    try:
        async with asyncio.timeout(30):
            while calls.count("trim") < 2:
                await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await agent.aclose()
    assert agent.cycles >= 1
    assert gc.get_freeze_count() == 0  # the fake froze nothing in the test process


@pytest.mark.parametrize(("env", "applied"), [({}, True), ({"MALLOC_ARENA_MAX": "4"}, False)])
def test_limit_malloc_arenas_unless_the_environment_says(
    env: dict[str, str], applied: bool
) -> None:
    import os
    import platform

    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from monitoringserver.agent import memory; print(memory.limit_malloc_arenas())",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"} | env,
    )
    assert done.stdout.strip() == str(applied and glibc)


def test_limit_malloc_arenas_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    import platform

    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    monkeypatch.setenv("MALLOC_ARENA_MAX", "8")
    assert memory.limit_malloc_arenas() is False
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    # Generous on purpose: the test runner's threads keep the arenas they have.
    assert memory.limit_malloc_arenas(64) is glibc
