"""The long-running processes: the durable scheduler, the HTTP API, the MCP server."""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import click

from flowcraft import RunResult
from flowcraft.cli.app import load_app
from flowcraft.cli.env import Env, pass_env
from flowcraft.cli.exits import UsageProblem
from flowcraft.cli.output import ENCODER, when
from flowcraft.cli.parse import parse_duration
from flowcraft.views import outcome_view


@click.group()
def scheduler() -> None:
    """The durable scheduler as a process."""


@scheduler.command("run")
@click.option("--interval", default="1s", show_default=True,
              help="Time between ticks: 1s, 500ms, 5m (more than 0).")
@pass_env
def scheduler_run(env: Env, interval: str) -> None:
    """Fire due timers, expire waits and recover crashed runs until SIGTERM or Ctrl-C.

    Each result is printed as it happens (one JSON line each with -o json). Several
    schedulers may run at once: claims make each firing happen once.

    \b
    Example:
      flowcraft --app myproj.workflows:service scheduler run --interval 5s
    """
    import signal

    import anyio

    every = parse_duration(interval, "--interval", positive=True)

    def on_result(result: RunResult) -> None:
        if env.json:
            sys.stdout.write(ENCODER.encode(outcome_view(service, result)).decode() + "\n")
        else:
            waits = ",".join(a.node_id for a in result.awaiting)
            sys.stdout.write(f"{when(datetime.now(UTC))}  {result.run_id}  "
                             f"{result.status}{'  ' + waits if waits else ''}\n")
        sys.stdout.flush()

    service = load_app(env.app)

    async def go() -> str:
        try:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async with service.scheduler(every, on_result=on_result) as sched:
                    sys.stderr.write(f"flowcraft scheduler: running every {every:g}s "
                                     "(SIGTERM or Ctrl-C stops it)\n")
                    sys.stderr.flush()
                    async for _ in signals:
                        break
                return repr(sched)
        finally:
            await service.store.close()

    done = anyio.run(go)
    sys.stderr.write(f"flowcraft scheduler: stopped cleanly; {done}\n")


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--token", "tokens", multiple=True, envvar="FLOWCRAFT_TOKEN",
              help="A bearer token allowed everything (repeat; or $FLOWCRAFT_TOKEN).")
@click.option("--base-url", help="The public URL (for approval links).")
@click.option("--link-secret", envvar="FLOWCRAFT_LINK_SECRET", help="Enables approval pages.")
@pass_env
def serve(env: Env, host: str, port: int, tokens: tuple[str, ...], base_url: str | None,
          link_secret: str | None) -> None:
    """Serve the HTTP API (flowcraft.http.create_app) under uvicorn.

    \b
    Example:
      FLOWCRAFT_TOKEN=s3cret flowcraft --app myproj.workflows:service serve --port 8080
    """
    import anyio

    try:
        import uvicorn

        from flowcraft.http import BearerAuth, create_app
    except ImportError as exc:
        raise ImportError(
            "flowcraft serve needs the 'cli' extra: pip install 'flowcraft[cli]'"
        ) from exc
    if not tokens:
        raise UsageProblem("serve needs --token TOKEN (or $FLOWCRAFT_TOKEN)")
    if link_secret is not None and not link_secret:
        raise UsageProblem("--link-secret is empty: anyone could sign approval links; "
                           "pass a long random secret, or leave the option out")
    service = load_app(env.app)
    everything = {"execution:read", "execution:start", "execution:cancel"}
    app = create_app(service, auth=BearerAuth(dict.fromkeys(tokens, everything)),
                     base_url=base_url, link_secret=link_secret)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="info"))

    async def go() -> None:
        try:
            await server.serve()
        finally:
            await service.store.close()

    anyio.run(go)


@click.command("mcp")
@pass_env
def mcp(env: Env) -> None:
    """Serve the MCP tools (flowcraft.mcp) over standard input and output.

    \b
    Example (an agent client's config):
      {"command": "flowcraft", "args": ["mcp"],
       "env": {"FLOWCRAFT_APP": "myproj.workflows:service"}}
    """
    import anyio

    from flowcraft.mcp import serve_stdio

    service = load_app(env.app)
    anyio.run(serve_stdio, service)
