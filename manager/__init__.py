"""manager: keeps the cluster's configuration and runs preheat jobs (Dragonfly manager v2)."""
