"""Small widgets of the operator app; each shows one part of a `RigState` snapshot."""
