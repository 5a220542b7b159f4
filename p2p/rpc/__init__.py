"""The peer's gRPC services: DfdaemonUpload for other peers and the scheduler, DfdaemonDownload locally."""
