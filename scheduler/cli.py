"""`lazyfly scheduler`: pick parents for peers (Dragonfly's scheduler.v2)."""

import click


@click.command("scheduler")
@click.option(
    "--listen", default="127.0.0.1:8002", show_default=True, metavar="HOST:PORT", help="gRPC address."
)
def scheduler(listen: str) -> None:
    """Serve scheduler.v2 over gRPC: hosts, tasks and peers, kept in memory."""
    import logging

    import anyio

    from lazyfly.scheduler.daemon import serve_scheduler

    logging.getLogger("lazyfly").setLevel(logging.INFO)
    anyio.run(serve_scheduler, listen)


COMMANDS = [scheduler]
