"""`python -m lazyfly`: the same CLI as `lazyfly`, for daemons that start other daemons."""

from lazyfly.cli import main

main()
