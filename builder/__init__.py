"""builder: turns a directory, a tarball or an OCI image into a lazyfly image, and checks and inspects images."""
