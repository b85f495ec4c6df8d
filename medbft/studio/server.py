"""The studio's web server: the page, and a small JSON API over one `Session`.

Why this exists: the browser cannot run the simulator; this server runs it and answers the
page. It listens on loopback by default (the studio is a local teaching tool: no
authentication, no TLS). Routes:

- `GET /`: the page (medbft/views/replay.py's page in studio mode);
- `POST /api/poll {gen, since, patient}`: new trace rows since row `since` (all of them when the
  run was rebuilt: `gen` differs), their narration, each replica's state (for a ledger run
  also its lot statuses and the consents of pseudonym `patient`, optional in every body),
  the checker's verdicts;
- `POST /api/advance {to_ns}`, `/api/step {what}`, `/api/seek {t_ns}`: move in virtual time
  (step: `event`, `message` or `phase`; seek backwards replays from the seed);
- `POST /api/action {action}`: a what-if (see `session.ACTIONS`), recorded as a timed fault;
  `POST /api/undo`: remove the last one;
- `POST /api/save`: write the scenario with the actions (`<name>-studio.yaml` in the save
  folder) and say how to reproduce it; `GET /api/scenario.yaml`: the same text.
Every answer to a move or an action is a poll answer. Bad input: HTTP 400 with `{"error"}`.

The simulator runs on its own virtual-time event loop, which cannot run inside aiohttp's; every
call into the session goes to one worker thread, one at a time, in arrival order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from aiohttp import web

from medbft.errors import UsageError
from medbft.scenario import BEHAVIORS, ScenarioError
from medbft.studio.session import Session
from medbft.views.replay import page_html
from sim.loop import LivelockError

__all__ = ["make_app"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def make_app(session: Session, save_dir: Path) -> web.Application:
    """The aiohttp application serving `session`; saved scenarios go to `save_dir`."""
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="medbft-studio")
    app = web.Application()

    async def call(fn: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(worker, fn)

    def api(move: Callable[[Session, dict[str, Any]], Any]) -> Handler:
        """A POST route: read the JSON body, apply `move`, answer with a poll."""
        async def handler(request: web.Request) -> web.StreamResponse:
            try:
                body = await request.json() if request.can_read_body else {}
                if not isinstance(body, dict):
                    raise UsageError("expected a JSON object")

                def run() -> dict[str, Any]:
                    move(session, body)
                    return session.poll(int(body.get("gen", -1)), int(body.get("since", 0)),
                                        body.get("patient") or None)

                return web.json_response(await call(run))
            except (UsageError, ScenarioError, ValueError, TypeError, KeyError) as exc:
                return web.json_response({"error": str(exc)}, status=400)
            except LivelockError as exc:  # e.g. a link made zero-delay: the run cannot go on
                return web.json_response({"error": f"{exc}; undo the last action"},
                                         status=400)
        return handler

    async def index(request: web.Request) -> web.StreamResponse:
        data = {"mode": "studio", "meta": session.meta, "behaviors": list(BEHAVIORS)}
        text = page_html(data, f"medbft studio: {session.meta['name']} (seed {session.seed})")
        return web.Response(text=text, content_type="text/html")

    async def scenario_yaml(request: web.Request) -> web.StreamResponse:
        return web.Response(text=await call(session.yaml_text), content_type="text/yaml")

    async def save(request: web.Request) -> web.StreamResponse:
        try:
            path = await call(lambda: session.save(save_dir))
        except OSError as exc:
            return web.json_response({"error": f"could not save: {exc}"}, status=400)
        return web.json_response({"path": str(path), "command": f"medbft run {path}",
                                  "actions": len(session.actions)})

    def _int(body: dict[str, Any], key: str) -> int:
        value = body.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UsageError(f"{key}: expected a number of nanoseconds; got {value!r}")
        return int(value)

    app.router.add_get("/", index)
    app.router.add_get("/api/scenario.yaml", scenario_yaml)
    app.router.add_post("/api/poll", api(lambda s, b: None))
    app.router.add_post("/api/advance", api(lambda s, b: s.advance_to(_int(b, "to_ns"))))
    app.router.add_post("/api/seek", api(lambda s, b: s.seek(_int(b, "t_ns"))))
    app.router.add_post("/api/step", api(lambda s, b: s.step(str(b.get("what")))))
    app.router.add_post("/api/action", api(lambda s, b: s.act(_action(b))))
    app.router.add_post("/api/undo", api(lambda s, b: s.undo()))
    app.router.add_post("/api/save", save)

    async def stop_worker(app: web.Application) -> None:
        await call(session.close)
        worker.shutdown(wait=True)

    app.on_cleanup.append(stop_worker)
    return app


def _action(body: dict[str, Any]) -> dict[str, Any]:
    action = body.get("action")
    if not isinstance(action, dict):
        raise UsageError('action: expected an object such as '
                         '{"kind": "crash", "node": "hospital-1"}')
    return action
