"""builder: turns a directory, tarball or OCI image into a lazyfly image; checks and inspects images."""
