"""The peer's HTTP proxy: header rules here, the server beside them."""
