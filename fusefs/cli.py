"""fusefs commands: `mount` (one image, standalone daemon), `umount`, and `fusefs` (the API daemon)."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import click

from lazyfly.api.fusefs import DEFAULT_READ_AHEAD
from lazyfly.units import parse_size

_IMAGE_HELP = (
    "IMAGE is an OCI layout directory, oci:PATH[:TAG], "
    "or a registry reference HOST[:PORT]/REPO[:TAG|@DIGEST]."
)


@click.command(epilog=_IMAGE_HELP)
@click.argument("image")
@click.argument("mountpoint", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default="/var/lib/lazyfly/fusefs/cache",
    show_default=True,
    help="Where verified chunks are kept; reused by the next mount.",
)
@click.option(
    "--backend",
    type=click.Choice(["auto", "local", "registry", "proxy"]),
    default="auto",
    show_default=True,
    help="Where chunks come from (auto: local layout, else proxy if given, else registry).",
)
@click.option("--proxy", "proxy_url", help="A peer's HTTP proxy, e.g. http://127.0.0.1:4001.")
@click.option("--plain-http", is_flag=True, help="Talk HTTP, not HTTPS, to the registry.")
@click.option(
    "--prefetch",
    type=click.Choice(["none", "table", "all"]),
    default="table",
    show_default=True,
    help="Fetch in the background: nothing, the image's prefetch table, or every blob.",
)
@click.option(
    "--prefetch-files",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File of absolute paths to prefetch first, one per line.",
)
@click.option(
    "--merge-limit",
    default="4MiB",
    show_default=True,
    help="Largest single backend request when adjacent missing chunks are merged.",
)
@click.option(
    "--read-ahead",
    default=f"{DEFAULT_READ_AHEAD >> 20}MiB",
    show_default=True,
    help="Largest window fetched ahead of a file read sequentially; 0 turns read-ahead off.",
)
@click.option("--foreground", is_flag=True, help="Serve in this process instead of a background daemon.")
def mount(
    image: str,
    mountpoint: Path,
    cache_dir: Path,
    backend: str,
    proxy_url: str | None,
    plain_http: bool,
    prefetch: str,
    prefetch_files: Path | None,
    merge_limit: str,
    read_ahead: str,
    foreground: bool,
) -> None:
    """Mount a lazyfly image; chunks are fetched when read. Returns once the mount answers."""
    from lazyfly.fusefs.config import BackendSettings, DaemonSettings, ImageSettings, PrefetchSettings
    from lazyfly.fusefs.mountpoint import recover, wait_until_mounted
    from lazyfly.oci.locate import locate_image

    location = locate_image(image)  # a bad reference fails here, before any daemon starts
    mountpoint = mountpoint.absolute()
    settings = ImageSettings(
        backend=BackendSettings(backend, proxy_url, plain_http),
        prefetch=PrefetchSettings(prefetch, _read_list(prefetch_files) if prefetch_files else []),
        merge_limit=parse_size(merge_limit),
        read_ahead=parse_size(read_ahead),
    )
    daemon = DaemonSettings(cache_dir=cache_dir.absolute())
    if foreground:
        import trio

        from lazyfly.fusefs.daemon import serve_image

        trio.run(serve_image, location, mountpoint, daemon, settings)
        return
    recover(mountpoint)
    mountpoint.mkdir(parents=True, exist_ok=True)
    log_path = _log_path(daemon.cache_dir, mountpoint)
    argv = [sys.argv[0], *[a for a in sys.argv[1:]], "--foreground"]
    with open(log_path, "ab") as log:
        child = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
    try:
        wait_until_mounted(
            mountpoint, "fuse", lambda: child.poll() is None, daemon.mount_timeout, daemon.read_ahead_kb
        )
    except Exception:
        if child.poll() is None:
            child.terminate()
        tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
        raise click.ClickException(
            f"mount of {image} on {mountpoint} failed:\n  " + "\n  ".join(tail)
        ) from None
    click.echo(f"mounted {image} on {mountpoint} (daemon pid {child.pid}, log {log_path})")


# A mountpoint is never stat()ed while parsing: a dead mount fails stat, and a mount whose session
# waits for a takeover blocks it until the new daemon (this command) serves.
class _Mountpoint(click.ParamType):
    name = "directory"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> Path:
        return Path(str(value))


MOUNTPOINT = _Mountpoint()


@click.command()
@click.argument("mountpoint", type=MOUNTPOINT)
def umount(mountpoint: Path) -> None:
    """Unmount a lazyfly mount; its daemon then exits. A dead daemon's mount is detached."""
    from lazyfly.fusefs.mountpoint import mount_entry, recover, unmount

    if recover(mountpoint):
        click.echo(f"detached the dead mount at {mountpoint}")
        return
    if mount_entry(mountpoint) is None:
        raise click.ClickException(f"nothing is mounted at {mountpoint}")
    unmount(mountpoint)
    click.echo(f"unmounted {mountpoint}")


@click.command("fusefs")
@click.option(
    "--mountpoint",
    required=True,
    type=MOUNTPOINT,
    help="Where the images appear, one subdirectory per image id (created if missing).",
)
@click.option(
    "--api-socket",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Unix socket of the HTTP API (POST/DELETE /api/v1/images, GET /api/v1/daemon, GET /metrics).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML file of daemon settings: cache_dir, mount_timeout, allow_other, read_ahead_kb.",
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where verified chunks are kept (overrides the config file).",
)
@click.option(
    "--takeover-fd",
    type=int,
    help="Serve the live FUSE session on this inherited descriptor instead of mounting: a "
    "supervisor that held a dead daemon's session (from API-SOCKET.session) passes it on.",
)
@click.option(
    "--restore",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="With --takeover-fd: a JSON list of the dead daemon's image add requests, with their slots, "
    "served again before the first request is answered.",
)
def fusefs_daemon(
    mountpoint: Path,
    api_socket: Path,
    config_path: Path | None,
    cache_dir: Path | None,
    takeover_fd: int | None,
    restore: Path | None,
) -> None:
    """Serve many images in one FUSE mount, added and removed through an HTTP API (runs in the foreground).

    The daemon hands its FUSE session descriptor to clients of API-SOCKET.session, so that a
    supervisor can keep the mount alive if the daemon dies and give it to the next one.
    """
    import dataclasses
    import logging

    import trio

    from lazyfly.api.fusefs import AddImageRequest, parse_json
    from lazyfly.config import load_config
    from lazyfly.fusefs.config import DaemonSettings
    from lazyfly.fusefs.daemon import Takeover, serve_daemon
    from lazyfly.fusefs.mountpoint import recover

    logging.getLogger("lazyfly").setLevel(logging.INFO)
    settings = load_config(config_path, DaemonSettings) if config_path else DaemonSettings()
    if cache_dir is not None:
        settings = dataclasses.replace(settings, cache_dir=cache_dir)
    settings = dataclasses.replace(settings, cache_dir=settings.cache_dir.absolute())
    mountpoint = mountpoint.absolute()
    takeover = None
    if takeover_fd is not None:
        listed = parse_json(restore.read_bytes(), str(restore)) if restore else []
        if not isinstance(listed, list):
            raise click.BadParameter(
                f"{restore}: expected a JSON list of add requests", param_hint="--restore"
            )
        requests = [AddImageRequest.from_json(item, str(restore)) for item in listed]
        takeover = Takeover(takeover_fd, requests)
    else:
        recover(mountpoint)  # a dead mount left by a killed daemon would fail the mkdir below
        mountpoint.mkdir(parents=True, exist_ok=True)
    api_socket.absolute().parent.mkdir(parents=True, exist_ok=True)
    trio.run(serve_daemon, mountpoint, api_socket.absolute(), settings, takeover)


def _read_list(path: Path) -> list[str]:
    return [
        line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]


def _log_path(cache_dir: Path, mountpoint: Path) -> Path:
    logs = cache_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    name = hashlib.sha256(os.fsencode(mountpoint)).hexdigest()[:16]
    return logs / f"mount-{name}.log"


@click.command()
@click.option(
    "--api-socket",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="API socket of the `lazyfly fusefs` daemon serving the image.",
)
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write here, not stdout."
)
@click.argument("image_id")
def accessed(api_socket: Path, output: Path | None, image_id: str) -> None:
    """Print the files of a served image read so far, in first-read order: a --prefetch-list.

    A file read only in parts is followed by a tab and the byte ranges of the chunks read. Record
    a workload once, then rebuild the image with `lazyfly convert --prefetch-list FILE` so that
    the next nodes fetch what it read before they are asked for it.
    """
    import trio

    from lazyfly.api.fusefs import AccessedFiles, accessed_path, parse_json
    from lazyfly.errors import LazyflyError, NotFound
    from lazyfly.http_unix import DEFAULT_REQUEST_TIMEOUT, request
    from lazyfly.prefetch_list import format_prefetch_list

    async def fetch() -> tuple[int, bytes]:
        with trio.fail_after(DEFAULT_REQUEST_TIMEOUT):
            return await request(api_socket, "GET", accessed_path(image_id))

    status, body = trio.run(fetch)
    if status == 404:
        raise NotFound(f"image {image_id} is not served by the daemon on {api_socket}")
    if status != 200:
        raise LazyflyError(f"daemon on {api_socket} answered {status}: {body[:200].decode(errors='replace')}")
    entries = AccessedFiles.from_json(parse_json(body, "answer"), "answer").entries()
    text = format_prefetch_list(entries)
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text)
        click.echo(f"wrote {len(entries)} paths to {output}", err=True)


COMMANDS = [mount, umount, fusefs_daemon, accessed]
