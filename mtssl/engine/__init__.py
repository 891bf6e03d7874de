"""The training loop, checkpoints, sliding-window inference and evaluation."""
