"""`medbft studio [SCENARIO]`: watch, pause, step, break and replay PBFT in a browser.

Why this exists: teaching. It starts a local web server (loopback by default) whose page drives
the deterministic simulator step by step (see `medbft.studio`): lanes, messages, each replica's
state, the narration, and what-if actions (crash, recover, partition, Byzantine, slow link)
recorded as timed faults; "save as scenario" writes a file that `medbft run` reproduces byte for
byte.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console

from medbft.errors import UsageError

__all__ = ["DEFAULT_SCENARIO", "register"]

#: The scenario the studio opens without one: the textbook normal case.
DEFAULT_SCENARIO = "scenarios/baseline.yaml"


def register(sub: Any) -> None:
    p = sub.add_parser("studio", help="watch and break a simulated run in a browser (a local "
                                      "web page driving the simulator step by step)")
    p.add_argument("scenario", nargs="?", default=DEFAULT_SCENARIO,
                   help=f"scenario YAML file (default {DEFAULT_SCENARIO})")
    p.add_argument("--seed", type=int, help="override the scenario's seed (>= 0)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a scenario field by dotted path, e.g. duration=3s")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; the "
                        "studio has no authentication)")
    p.add_argument("--port", type=int, default=8765,
                   help="port to listen on (default 8765; 0 picks a free one)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser")
    p.add_argument("--save-dir", type=Path, default=Path("."),
                   help="where 'save as scenario' writes <name>-studio.yaml (default: here)")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace, console: Console, err: Console) -> int:
    from medbft.scenario import ScenarioError, load_scenario
    from medbft.scenario.model import simulation_problems

    if args.seed is not None and args.seed < 0:
        raise UsageError(f"--seed: expected a whole number >= 0; got {args.seed}")
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port: expected 0 to 65535; got {args.port}")
    if not args.save_dir.is_dir():
        raise UsageError(f"--save-dir: {args.save_dir} is not a directory")
    scenario = load_scenario(args.scenario, overrides=args.set)
    if problems := simulation_problems(scenario):
        raise ScenarioError.from_problems(args.scenario, problems)
    return serve(scenario, args.seed, args.host, args.port, args.save_dir,
                 open_browser=not args.no_browser, console=console)


def serve(scenario: Any, seed: int | None, host: str, port: int, save_dir: Path,
          open_browser: bool, console: Console) -> int:
    import asyncio
    import contextlib
    import signal

    from aiohttp import web

    from medbft.studio.server import make_app
    from medbft.studio.session import Session

    async def main() -> None:
        app = make_app(Session(scenario, seed), save_dir)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise UsageError(f"--port {port}: cannot listen on {host}: {exc.strerror}; "
                             f"try another --port (0 picks a free one)") from None
        bound = runner.addresses[0][1] if runner.addresses else port
        url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{bound}/"
        console.print(f"medbft studio: {scenario.name} at {url} (Ctrl-C stops it)",
                      markup=False)
        if open_browser:
            import webbrowser
            webbrowser.open(url)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C or kill: stop cleanly
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
    console.print("medbft studio: stopped", markup=False)
    return 0
