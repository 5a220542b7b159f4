"""Tasks: what a download is called (task id) and how it is cut (pieces)."""
