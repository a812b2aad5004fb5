"""The application: what a user runs (record, evaluate, run a policy), as typed functions and classes
that the `rig` commands and the terminal app both call. It wires hardware/, rig/, recorder/ and
policy/ together, importing the policy lazily so the rig's own operations never load torch."""
