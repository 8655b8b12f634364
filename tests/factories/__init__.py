"""Factories that build tiny real checkpoints in ``tmp_path`` (no downloads)."""
