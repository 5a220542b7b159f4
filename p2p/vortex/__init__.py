"""Vortex 0.1.5: the TLV protocol that moves piece bytes between peers."""
