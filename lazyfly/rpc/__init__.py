"""gRPC plumbing shared by the roles that serve gRPC (snapshotter, peer, scheduler)."""
