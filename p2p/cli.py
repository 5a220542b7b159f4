"""`lazyfly peer` (the dfdaemon-like peer daemon) and `lazyfly get` (dfget through it)."""

from pathlib import Path

import click

from lazyfly.errors import InvalidArgument

DEFAULT_SOCKET = Path("/var/lib/lazyfly/peer/dfdaemon.sock")


@click.command("peer")
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML file of peer settings (flags win).",
)
@click.option(
    "--seed", is_flag=True, default=None, help="Run as a seed peer (the scheduler's back-to-source peer)."
)
@click.option(
    "--scheduler",
    metavar="HOST:PORT",
    help="The scheduler's gRPC address; none: every download goes to the origin.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Pieces and their metadata. Default /var/lib/lazyfly/peer.",
)
@click.option("--ip", help="The address this peer listens on and announces. Default 127.0.0.1.")
@click.option(
    "--hostname", help="The host name announced (the host id is IP-HOSTNAME). Default: this machine's."
)
@click.option("--idc", help="The IDC announced (parents in the same IDC score higher).")
@click.option("--location", help="The location announced, |-separated (country|city|...).")
@click.option("--upload-port", type=int, help="DfdaemonUpload gRPC port (default 4000; 0: any).")
@click.option("--proxy-port", type=int, help="HTTP proxy port (default 4001; 0: any).")
@click.option("--metrics-port", type=int, help="Prometheus metrics port (default 4002; 0: any).")
@click.option("--vortex-port", type=int, help="Vortex TCP piece port (default 4005; 0: any).")
@click.option(
    "--download-socket",
    type=click.Path(dir_okay=False, path_type=Path),
    help="DfdaemonDownload unix socket. Default DATA_DIR/dfdaemon.sock.",
)
def peer(config_path: Path | None, **flags: object) -> None:
    """Serve pieces to other peers and download through them: Dragonfly's dfdaemon, in Python."""
    import dataclasses
    import logging

    import anyio

    from lazyfly.config import load_config
    from lazyfly.p2p.config import PeerSettings
    from lazyfly.p2p.daemon import serve_peer

    settings = load_config(config_path, PeerSettings) if config_path else PeerSettings()
    settings = dataclasses.replace(settings, **{k: v for k, v in flags.items() if v is not None})
    settings = dataclasses.replace(settings, data_dir=settings.data_dir.absolute())
    logging.getLogger("lazyfly").setLevel(logging.INFO)
    anyio.run(serve_peer, settings)


def _header(value: str) -> tuple[str, str]:
    name, sep, text = value.partition(":")
    if not sep or not name.strip():
        raise InvalidArgument(f"header {value!r}: expected 'Name: value'")
    return name.strip(), text.strip()


@click.command("get")
@click.argument("url")
@click.option(
    "-O",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the file.",
)
@click.option(
    "--peer",
    "socket_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_SOCKET,
    show_default=True,
    help="The local peer's download socket.",
)
@click.option(
    "-H", "--header", "headers", multiple=True, metavar="'K: V'", help="A header for the origin (repeatable)."
)
@click.option("--tag", default="", help="Tag of the task (different tags are different tasks).")
@click.option("--application", default="", help="Application of the task.")
@click.option("--piece-length", type=int, help="Piece length in bytes (at least 4 MiB).")
@click.option("--digest", metavar="sha256:HEX", help="Check the file against this digest.")
@click.option(
    "--require-peer", is_flag=True, help="Fail instead of downloading from the origin without a peer."
)
def get(
    url: str,
    output: Path,
    socket_path: Path,
    headers: tuple[str, ...],
    tag: str,
    application: str,
    piece_length: int | None,
    digest: str | None,
    require_peer: bool,
) -> None:
    """Download URL through the local peer (P2P), with a progress bar; like Dragonfly's dfget."""
    import functools
    import time

    import anyio

    from lazyfly.p2p.download.request import DownloadRequest
    from lazyfly.p2p.get import get as download
    from lazyfly.progress import RichProgress

    request = DownloadRequest(
        url=url,
        headers=tuple(_header(h) for h in headers),
        tag=tag,
        application=application,
        piece_length=piece_length,
        digest=digest,
    )
    began = time.monotonic()
    with RichProgress(f"get {output.name}") as bar:
        how = anyio.run(
            functools.partial(download, require_peer=require_peer),
            request,
            output.absolute(),
            socket_path,
            bar,
        )
    size = output.stat().st_size
    seconds = time.monotonic() - began
    click.echo(f"{output}: {size} bytes in {seconds:.2f} s (through the {how}), task {request.task_id}")


COMMANDS = [peer, get]
