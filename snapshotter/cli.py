"""`lazyfly snapshotter`: the containerd remote snapshotter (proxy plugin) daemon."""

from pathlib import Path

import click


@click.command("snapshotter")
@click.option(
    "--address",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Unix socket containerd talks to ([proxy_plugins.lazyfly] address). "
    "Default /run/lazyfly/snapshotter.sock.",
)
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    help="State directory: metadata.db, snapshots/, and (unless configured) the fusefs mount, "
    "socket and cache. Default /var/lib/lazyfly/snapshotter.",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML file of snapshotter settings (flags win).",
)
@click.option(
    "--fusefs-socket",
    type=click.Path(dir_okay=False, path_type=Path),
    help="API socket of a fusefs daemon someone else runs; without it the snapshotter runs its own.",
)
@click.option(
    "--peer-proxy", help="Fetch lazy images through this peer's HTTP proxy (http://127.0.0.1:4001)."
)
@click.option(
    "--plain-http",
    multiple=True,
    metavar="HOST:PORT",
    help="A registry spoken to over plain http (repeatable).",
)
@click.option(
    "--prefetch",
    type=click.Choice(["none", "table", "all"]),
    help="What the fusefs daemon fetches of a lazy image before it is read (default: table).",
)
@click.option(
    "--metrics-address", metavar="HOST:PORT", help="Serve Prometheus metrics at http://HOST:PORT/metrics."
)
def snapshotter(
    address: Path | None,
    root: Path | None,
    config_path: Path | None,
    fusefs_socket: Path | None,
    peer_proxy: str | None,
    plain_http: tuple[str, ...],
    prefetch: str | None,
    metrics_address: str | None,
) -> None:
    """Serve containerd's snapshots API: lazyfly images start without a download, others as overlayfs."""
    import dataclasses
    import logging

    import anyio

    from lazyfly.config import load_config
    from lazyfly.snapshotter.config import SnapshotterSettings
    from lazyfly.snapshotter.daemon import serve_snapshotter

    settings = load_config(config_path, SnapshotterSettings) if config_path else SnapshotterSettings()
    overrides = {
        "address": address,
        "root": root,
        "fusefs_socket": fusefs_socket,
        "peer_proxy": peer_proxy,
        "prefetch": prefetch,
        "metrics_address": metrics_address,
    }
    settings = dataclasses.replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    if plain_http:
        settings = dataclasses.replace(settings, plain_http=[*settings.plain_http, *plain_http])
    settings = dataclasses.replace(
        settings, address=settings.address.absolute(), root=settings.root.absolute()
    )
    logging.getLogger("lazyfly").setLevel(logging.INFO)
    anyio.run(serve_snapshotter, settings)


COMMANDS = [snapshotter]
