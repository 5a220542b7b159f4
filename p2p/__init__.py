"""p2p: the peer daemon (Dragonfly dfdaemon v2) that stores, verifies and shares pieces."""
