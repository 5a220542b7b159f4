"""scheduler: picks parents for peers and triggers seed peers (Dragonfly scheduler v2)."""
