"""Task heads and the cross-task transforms that let tasks supervise each other."""
