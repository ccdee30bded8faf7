"""bigstream_core."""
