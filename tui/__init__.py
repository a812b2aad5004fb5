"""The Textual operator app (issue 7)."""
