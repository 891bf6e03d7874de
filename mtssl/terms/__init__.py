"""Loss terms (supervised, consistency, pseudo-label, uncertainty) and their weight schedules."""
