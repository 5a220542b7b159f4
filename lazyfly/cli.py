"""The `lazyfly` command: one click group that dispatches to each role's own cli module.

Errors are mapped to exit codes and messages here and nowhere else: a LazyflyError prints its
message (which names its subject) and exits 1, or 2 for invalid arguments; a full disk or another
OS error prints its cause without a traceback.
"""

import errno
import logging
import sys
from pathlib import Path

import click

from lazyfly import __version__
from lazyfly.builder import cli as builder_cli
from lazyfly.errors import InvalidArgument, LazyflyError
from lazyfly.fusefs import cli as fusefs_cli
from lazyfly.p2p import cli as p2p_cli
from lazyfly.scheduler import cli as scheduler_cli
from lazyfly.snapshotter import cli as snapshotter_cli


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lazyfly")
@click.option("-v", "--verbose", is_flag=True, help="Log debug lines on stderr.")
def group(verbose: bool) -> None:
    """lazyfly: lazy-loading container images and model weights (Nydus + Dragonfly in Python)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="time=%(asctime)s level=%(levelname)s logger=%(name)s msg=%(message)s",
        stream=sys.stderr,
    )


@click.command("up")
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML file of node settings: state_dir, run_dir, plain_http, peer_proxy, prefetch, p2p, ip, "
    "hostname, scheduler, run_scheduler, peer_ports, seed_ports.",
)
@click.option(
    "--state-dir", type=click.Path(file_okay=False, path_type=Path), help="Default /var/lib/lazyfly."
)
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), help="Default /run/lazyfly.")
@click.option("--plain-http", multiple=True, metavar="HOST:PORT", help="A registry spoken to over http.")
def up(
    config_path: Path | None, state_dir: Path | None, run_dir: Path | None, plain_http: tuple[str, ...]
) -> None:
    """Run a whole lazyfly node on embedded defaults, in the foreground: scheduler, seed peer, peer,
    snapshotter and fusefs daemon."""
    import dataclasses

    import anyio

    from lazyfly.config import load_config
    from lazyfly.node import NodeSettings, containerd_snippet, run_node

    settings = load_config(config_path, NodeSettings) if config_path else NodeSettings()
    overrides = {"state_dir": state_dir, "run_dir": run_dir}
    settings = dataclasses.replace(
        settings, **{k: v.absolute() for k, v in overrides.items() if v is not None}
    )
    settings = dataclasses.replace(settings, plain_http=[*settings.plain_http, *plain_http])
    logging.getLogger("lazyfly").setLevel(logging.INFO)
    click.echo("lazyfly node: add this to containerd's config.toml and restart containerd:\n")
    click.echo(containerd_snippet(settings) + "\n", nl=False)
    anyio.run(run_node, settings)


for command in [
    *builder_cli.COMMANDS,
    *fusefs_cli.COMMANDS,
    *snapshotter_cli.COMMANDS,
    *scheduler_cli.COMMANDS,
    *p2p_cli.COMMANDS,
]:
    group.add_command(command)
group.add_command(up)


def main() -> None:
    """Run the CLI, turning expected errors into one readable line and an exit code."""
    try:
        group.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("lazyfly: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except InvalidArgument as exc:
        click.echo(f"lazyfly: error: {exc}", err=True)
        sys.exit(2)
    except LazyflyError as exc:
        click.echo(f"lazyfly: error: {exc}", err=True)
        sys.exit(1)
    except OSError as exc:
        cause = "no space left on device" if exc.errno == errno.ENOSPC else exc.strerror or str(exc)
        where = f" ({exc.filename})" if exc.filename else ""
        click.echo(f"lazyfly: error: {cause}{where}", err=True)
        sys.exit(1)
