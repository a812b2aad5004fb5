"""CurveZMQ keys for the policy server, laid out so that one command sets up both ends.

    <folder>/server.key, server.key_secret        the server's keypair (clients need server.key)
    <folder>/client.key, client.key_secret        a client keypair (the rig needs client.key_secret)
    <folder>/authorized_clients/*.key             the public keys the server accepts

Copy `server.key` and `client.key_secret` to the rig; to add another rig, put its public key in
`authorized_clients/` and restart the server.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import zmq.auth

SERVER, CLIENT, AUTHORIZED = "server", "client", "authorized_clients"


@dataclass(frozen=True)
class KeyPaths:
    folder: Path
    created: bool  # whether ensure_keys made any key (so the caller can say where they are)

    @property
    def server_public(self) -> Path:
        return self.folder / f"{SERVER}.key"

    @property
    def server_secret(self) -> Path:
        return self.folder / f"{SERVER}.key_secret"

    @property
    def client_public(self) -> Path:
        return self.folder / f"{CLIENT}.key"

    @property
    def client_secret(self) -> Path:
        return self.folder / f"{CLIENT}.key_secret"

    @property
    def authorized(self) -> Path:
        return self.folder / AUTHORIZED

    def authorized_keys(self) -> list[Path]:
        return sorted(self.authorized.glob("*.key"))


def ensure_keys(folder: Path) -> KeyPaths:
    """Create whatever is missing: the folder, the server keypair, and a client keypair that is
    authorized at once. Existing keys are kept, so a configured folder is left as it is."""
    paths = KeyPaths(Path(folder), created=False)
    paths.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    paths.authorized.mkdir(mode=0o700, exist_ok=True)
    created = False
    for name, secret in ((SERVER, paths.server_secret), (CLIENT, paths.client_secret)):
        if not secret.exists():
            _, secret_file = zmq.auth.create_certificates(paths.folder, name)
            Path(secret_file).chmod(0o600)
            created = True
            if name == CLIENT:
                shutil.copyfile(paths.client_public, paths.authorized / paths.client_public.name)
    return KeyPaths(paths.folder, created)
