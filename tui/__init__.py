"""The Textual operator app: it reads the rig's published state and sends commands, never touching a bus."""
