"""The episode store (issue 4)."""
