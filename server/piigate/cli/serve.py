"""`piigate serve`: run the gateway until SIGTERM/SIGINT, then drain in-flight calls."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from piigate.audit.trail import AuditChainError
from piigate.cli.check_config import load_or_report
from piigate.cli.workers import cpu_count, supervise
from piigate.config import GatewayConfig
from piigate.transport.addresses import AddressInUse, ListenAddress, parse_listen


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="gateway TOML config")
    parser.add_argument("--listen", type=parse_listen, help="HOST:PORT, overrides server.listen")
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    parser.add_argument(
        "--workers", type=int, default=1,
        help="gateway processes sharing the port (0: one per available core)",
    )
    parser.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    config = load_or_report(args.config)
    if config is None:
        return 2
    workers = args.workers if args.workers > 0 else cpu_count()
    if workers > 1 and args.worker_index is None:
        listen = args.listen or config.server.listen
        return supervise(args.config, listen, workers, ["--log-level", args.log_level])
    try:
        with asyncio.Runner(loop_factory=loop_factory(config.server.event_loop)) as runner:
            runner.run(_serve(config, args.listen, args.worker_index))
    except AuditChainError as exc:
        print(f"audit: {exc}", file=sys.stderr)
        return 2
    except AddressInUse as exc:
        print(f"cannot listen on {exc}: the address is in use", file=sys.stderr)
        return 2
    return 0


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop (libuv) or the standard loop; measured in README "Performance"."""
    if name != "uvloop":
        return None
    import uvloop

    return uvloop.new_event_loop


async def _serve(
    config: GatewayConfig, listen: ListenAddress | None, worker: int | None
) -> None:
    from piigate.bootstrap import start_gateway  # the gRPC stack is imported only to serve

    gateway = await start_gateway(config, listen=listen, worker=worker)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    host = (listen or config.server.listen).host
    shown = f"[{host}]" if ":" in host else host
    print(f"listening on {shown}:{gateway.port}", flush=True)
    await stop.wait()
    logging.getLogger(__name__).info("draining in-flight calls")
    await gateway.stop(config.server.shutdown_grace_s)
