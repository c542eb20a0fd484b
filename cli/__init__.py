"""The `cutfx` command: demo, batch, checkpoint."""
