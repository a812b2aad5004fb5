"""Subcommands that wire several layers together: the `rig` entry point's exception to the layering."""
