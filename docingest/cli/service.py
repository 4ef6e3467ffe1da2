"""Commands that run the service's processes: all in one (`up`), or one role each (the Procfile;
`webhooks deliver` is in `cli/webhooks.py`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer

from docingest.cli.app import app, console, database, database_errors
from docingest.cli.keys import refuse_open_exposure
from docingest.settings import Settings, get_settings, mask_password

Host = Annotated[str | None, typer.Option(help="Interface to bind (env HOST; default 127.0.0.1)")]
Port = Annotated[int | None, typer.Option(help="Port to listen on (env PORT; default 8000)")]
Processes = Annotated[
    int | None, typer.Option(help="Worker processes (env WORKER_PROCESSES; default: CPU count)")
]
Threads = Annotated[
    int | None, typer.Option(help="Threads per worker process (env WORKER_THREADS; default 8)")
]


@app.command()
def api(
    host: Host = None,
    port: Port = None,
    workers: Annotated[
        int, typer.Option(envvar="WEB_CONCURRENCY", help="uvicorn worker processes")
    ] = 1,
) -> None:
    """Serve the HTTP API (the Procfile's `web`)."""
    import uvicorn

    settings = get_settings()
    host = host or settings.host
    refuse_open_exposure(settings, host)
    os.environ["HOST"] = host  # the app checks where it is served from its own settings
    get_settings.cache_clear()
    uvicorn.run(
        "docingest.api:app",
        host=host,
        port=port or settings.port,
        workers=workers,
        proxy_headers=True,
        access_log=False,
        timeout_keep_alive=settings.keep_alive_seconds,
    )


@app.command()
def worker(processes: Processes = None, threads: Threads = None) -> None:
    """Run the Dramatiq workers (the Procfile's `worker`); trains the built-in model if missing."""
    settings = get_settings()
    ensure_model(settings)
    os.environ.update(_WORKER_ENVIRONMENT)
    os.execv(sys.executable, _worker_command(settings, processes, threads))  # noqa: S606


@app.command()
def migrate() -> None:
    """Create or upgrade the database schema (the Procfile's `release`)."""
    from docingest.db import migrate as run_migrations

    settings = get_settings()
    with database_errors():
        run_migrations(settings.database_url)
    console.print(f"database at [bold]{settings.masked_database_url()}[/] is up to date")


@app.command()
def up(
    port: Port = None,
    processes: Annotated[int, typer.Option(help="Worker processes")] = 1,
    threads: Threads = None,
) -> None:
    """All in one: embedded Redis, SQLite, one API, one worker and one webhook-delivering
    process; Ctrl-C stops all."""
    from docingest.db import migrate as run_migrations

    settings = get_settings()
    refuse_open_exposure(settings, settings.host)
    env = dict(os.environ)
    with _broker_url(settings) as broker_url:
        env["BROKER_URL"] = broker_url
        run_migrations(settings.database_url)
        ensure_model(settings)
        port = port or settings.port
        # Own sessions: Ctrl-C reaches only this supervisor, which stops the children in order.
        children = [
            subprocess.Popen(
                [sys.executable, "-m", "docingest", "api", "--port", str(port)],
                env=env,
                start_new_session=True,
            ),
            subprocess.Popen(
                _worker_command(settings, processes, threads),
                env=env | _WORKER_ENVIRONMENT,
                start_new_session=True,
            ),
            subprocess.Popen(
                [sys.executable, "-m", "docingest", "webhooks", "deliver"],
                env=env,
                start_new_session=True,
            ),
        ]
        console.print(
            f"docingest is up: http://{settings.host}:{port}  (database "
            f"{settings.masked_database_url()}, broker {mask_password(broker_url)}); Ctrl-C to stop"
        )
        _supervise(children)


# An idle Dramatiq consumer polls Redis with a back-off of up to `dramatiq_worker_timeout` ms
# (1,000 by default): a burst after a quiet spell would wait that long for its first batch.
# A worker process is one core's worth of work already: OpenBLAS's own threads would only fight
# the other processes for cores, and each holds a buffer (~9 MB of RSS a process, measured).
_WORKER_ENVIRONMENT = {
    "dramatiq_worker_timeout": "100",
    "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS", "1"),
}


def _worker_command(settings: Settings, processes: int | None, threads: int | None) -> list[str]:
    return [
        sys.executable,
        "-m",
        "dramatiq",
        "docingest.worker.actors",
        "--processes",
        str(processes or settings.worker_processes),
        "--threads",
        str(threads or settings.worker_threads),
    ]


@contextmanager
def _broker_url(settings: Settings) -> Iterator[str]:
    """The user's BROKER_URL if given, else an embedded Redis for the lifetime of `up`."""
    if "broker_url" in settings.model_fields_set:
        yield settings.broker_url
        return
    from docingest.embedded import EmbeddedRedis

    with EmbeddedRedis(settings.redis_data_dir, appendfsync=settings.redis_appendfsync) as server:
        yield server.url


def _supervise(children: list[subprocess.Popen[bytes]]) -> None:
    """Wait until Ctrl-C, SIGTERM or a child's death, then stop every child gracefully."""

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # SIGINT too: a process started with SIGINT ignored (as some supervisors and test runners
    # start their children) would otherwise never see Ctrl-C, and `up` would never stop.
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    try:
        while all(child.poll() is None for child in children):
            time.sleep(0.2)
        console.print("[red]a docingest process exited; stopping the others[/]")
    except KeyboardInterrupt:
        console.print("stopping…")
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGINT)
        for child in children:
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()


def ensure_model(settings: Settings) -> None:
    """Workers need an active model: an empty registry starts with MODEL_PATH, trained first
    on the built-in corpus (a few seconds) if that file is missing too."""
    from docingest.model.registry import ensure_active

    with console.status("checking the model registry"), database() as engine:
        version = ensure_active(engine, settings.model_path)
    console.print(f"active model: [bold]{version}[/]")
