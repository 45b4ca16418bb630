"""`krnet serve`: the host service or the runner agent, headless, until SIGTERM/SIGINT.

Stopping leaves every tunnel, bridge and allocation in place (docs/design.md): running containers
keep their connectivity, and the next start reconciles.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import resource
import signal
from pathlib import Path
from typing import TYPE_CHECKING

from krnet.config import load_settings
from krnet.core.protocol.token import read_token

if TYPE_CHECKING:
    from collections.abc import Iterator

    from krnet.core.control.planes import RunnerDataPlane
    from krnet.core.model.settings import LoadedSettings, Settings
    from krnet.core.record.store import Store

log = logging.getLogger("krnet.serve")

# descriptors beyond the join connections: listener, SQLite, log, threads, refusals in flight
SPARE_FILES = 64


def run(args: argparse.Namespace) -> int:
    """Run in the configured mode (or --mode) until a signal; exit 0."""
    from krnet.config.checks import warnings
    from krnet.core.record.store import Store

    loaded = load_settings(args)
    settings = loaded.settings
    for note in warnings(settings, loaded.sources):
        log.warning("%s", note)
    token = read_token(settings, loaded.data_dir)
    if settings.mode == "host":
        raise_open_files_limit(settings.max_connections + SPARE_FILES)
    with Store.open(loaded.data_dir) as store:
        log.info(
            "krnet serve: %s mode, data dir %s, overlay %s%s",
            settings.mode,
            loaded.data_dir,
            "enabled" if settings.overlay_enabled else "disabled",
            f" ({settings.overlay_mode} mode)" if settings.mode == "host" else "",
        )
        with _metrics(loaded):
            asyncio.run(_serve(settings, loaded.data_dir, store, token))
    log.info("stopped; tunnels and allocations left in place")
    return 0


@contextlib.contextmanager
def _metrics(loaded: LoadedSettings) -> Iterator[None]:
    """/metrics, /healthz and /readyz on metrics_bind (when set), in threads beside the loop."""
    if not loaded.settings.metrics_bind:
        yield
        return
    from krnet.core.control.metrics_server import MetricsServer

    server = MetricsServer(loaded)
    server.start()
    try:
        yield
    finally:
        server.stop()


def raise_open_files_limit(needed: int) -> None:
    """Lift the soft RLIMIT_NOFILE to the hard one: past it accept() fails instead of `busy`."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return
    target = max(soft, needed) if hard == resource.RLIM_INFINITY else hard
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < needed:
        log.warning(
            "the open-files limit is %d but max_connections needs about %d: connections past "
            "it fail instead of getting `busy`; raise LimitNOFILE in the systemd unit "
            "(or ulimit -n), or lower max_connections",
            target,
            needed,
        )


async def _serve(settings: Settings, data_dir: Path, store: Store, token: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if settings.mode == "host":
        await _serve_host(settings, store, token, stop)
    else:
        await _serve_runner(settings, data_dir, store, token, stop)


async def _serve_host(settings: Settings, store: Store, token: str, stop: asyncio.Event) -> None:
    from krnet.core.control.host import HostService
    from krnet.core.control.planes import make_host_dataplane

    service = HostService(settings, store, token, make_host_dataplane(settings, store))
    await service.start()
    try:
        await stop.wait()
    finally:
        await service.stop()


async def _serve_runner(
    settings: Settings, data_dir: Path, store: Store, token: str, stop: asyncio.Event
) -> None:
    from krnet.core.control.planes import make_runner_dataplane

    dataplane = make_runner_dataplane(settings, store)
    await asyncio.to_thread(dataplane.prepare)
    if not settings.overlay_enabled:
        await _keep_default_network(settings, dataplane, stop)
        return
    from krnet.core.control.agent import RunnerAgent

    agent = RunnerAgent(settings, data_dir, token, dataplane, store=store)
    running = asyncio.create_task(agent.run())
    stopping = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if running in done:
        running.result()  # run() only returns when stopped; anything else is a bug to surface
        return
    # drop a heartbeat or connect in flight; an apply already in its thread still completes
    agent.stop()
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running


async def _keep_default_network(
    settings: Settings, dataplane: RunnerDataPlane, stop: asyncio.Event
) -> None:
    """Overlay off (reference: "Network Selection"): containers use the default network only."""
    log.info("overlay disabled: containers use %s", settings.docker_network_name)
    while True:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), settings.reconcile_interval)
            return
        await asyncio.to_thread(dataplane.prepare)
