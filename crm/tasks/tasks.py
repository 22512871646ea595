"""Task actors (Dramatiq)."""
