"""The `lazyfly` command: one click group that dispatches to each role's own cli module."""

import click

from lazyfly import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lazyfly")
def main() -> None:
    """lazyfly: lazy-loading container images and model weights (Nydus + Dragonfly in Python)."""
