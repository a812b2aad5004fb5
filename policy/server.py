"""`rig serve`'s engine: a `Policy` behind a zmq REP socket, one request at a time.

One at a time because the model lives on one device: a second request waits in zmq's queue rather
than racing the first for the GPU. Every request gets a reply, an error one when anything fails,
so a rig never waits on a server that is still up. The server binds to loopback unless it has
CurveZMQ keys: a policy server on the network without them lets anyone on the network drive the robot.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from policy.interface import Policy
from policy.keys import KeyPaths, ensure_keys
from policy.wire import PROTOCOL, WireError, chunk_actions, decode, encode, read_infer_request
from rig import __version__

__all__ = ["DEFAULT_BIND", "InsecureBindError", "KeyPaths", "PolicyServer", "check_bind", "ensure_keys"]

DEFAULT_BIND = "tcp://127.0.0.1:5555"
POLL_MS = 100  # how soon serve() notices its stop event


class InsecureBindError(ValueError):
    """A bind reachable from the network without CurveZMQ."""


class UnsafeChunk(RuntimeError):
    """The policy returned actions the rig must not execute (wrong shape, NaN, inf)."""


def is_loopback(endpoint: str) -> bool:
    """Whether only this machine can reach `endpoint` (tcp on a loopback address, ipc, inproc)."""
    transport, _, address = endpoint.partition("://")
    if transport in ("ipc", "inproc"):
        return True
    host = address.rpartition(":")[0].strip("[]")
    if transport != "tcp" or not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # "*", an interface name or a host name: assume the network
        return False


def check_bind(bind: str, keys: Path | None, allow_insecure: bool) -> str | None:
    """None when `bind` is safe; the warning to print when it is unsafe but allowed; else raises."""
    if keys is not None or is_loopback(bind):
        return None
    why = f"{bind} without CurveZMQ keys: anyone on the network could drive the robot"
    if not allow_insecure:
        raise InsecureBindError(
            f"refusing to serve on {why}. Pass --keys DIR to require authorized clients, "
            "bind tcp://127.0.0.1:PORT, or pass --allow-insecure on a network you trust"
        )
    return f"warning: serving on {why}"


class PolicyServer:
    def __init__(
        self,
        policy: Policy,
        bind: str = DEFAULT_BIND,
        keys: Path | None = None,
        allow_insecure: bool = False,
        say: Callable[[str], None] = print,
    ) -> None:
        warning = check_bind(bind, keys, allow_insecure)
        if warning:
            say(warning)
        self.policy, self._say = policy, say
        self.keys = None if keys is None else ensure_keys(keys)
        self._context = zmq.Context()
        self._auth: ThreadAuthenticator | None = None
        self._socket = self._context.socket(zmq.REP)
        self._socket.linger = 0
        try:
            if self.keys is not None:
                self._require_curve(self.keys)
            self._socket.bind(bind)
        except BaseException:
            self.close()
            raise
        self.endpoint: str = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)  # the real port for ":*"

    def _require_curve(self, keys: KeyPaths) -> None:
        if keys.created:
            self._say(
                f"created CurveZMQ keys in {keys.folder}: give clients {keys.server_public} "
                f"(the server's public key) and {keys.client_secret} (an authorized client key)"
            )
        self._auth = ThreadAuthenticator(self._context)
        self._auth.start()
        self._auth.configure_curve(domain="*", location=str(keys.authorized))
        public, secret = zmq.auth.load_certificate(keys.server_secret)
        self._socket.curve_publickey = public
        self._socket.curve_secretkey = secret
        self._socket.curve_server = True

    def serve(self, stop: threading.Event | None = None) -> None:
        """Answer requests until `stop` is set (or forever)."""
        stop = stop or threading.Event()
        while not stop.is_set():
            if self._socket.poll(POLL_MS):
                self._socket.send(self.respond(self._socket.recv()))

    def respond(self, data: bytes) -> bytes:
        """The encoded reply to one encoded request; never raises, so the REP socket always replies."""
        request_id = None
        try:
            message = decode(data)
            if not isinstance(message, dict):
                raise WireError(f"a request must be a map, got {type(message).__name__}")
            request_id = message.get("id") if isinstance(message.get("id"), int) else None
            reply = self._answer(message)
        except Exception as error:  # a bad request or a failed inference: tell the rig, keep serving
            reply = {"kind": "error", "id": request_id, "message": f"{type(error).__name__}: {error}"}
            self._say(f"request {request_id}: {reply['message']}")
        return encode(reply)

    def _answer(self, message: dict[str, Any]) -> dict[str, Any]:
        kind = message.get("kind")
        if kind == "ping":
            return {"kind": "pong"}
        if kind == "info":
            server = {"version": __version__, "protocol": PROTOCOL}
            return {"kind": "info", "info": self.policy.info().to_dict(), "server": server}
        if kind != "infer":
            raise WireError(f"unknown request kind {kind!r}; expected info, infer or ping")
        observation, guidance = read_infer_request(message)
        start = time.perf_counter()
        actions = self.policy.infer(observation, guidance)
        infer_s = time.perf_counter() - start
        try:
            checked = chunk_actions(np.asarray(actions))
        except WireError as error:
            raise UnsafeChunk(f"the policy returned actions the rig must not execute: {error}") from error
        return {"kind": "chunk", "id": message.get("id"), "actions": checked, "infer_s": infer_s}

    def close(self) -> None:
        """Release the socket and key checker; call after serve() has returned."""
        self._socket.close(linger=0)
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        self._context.term()

    def __enter__(self) -> PolicyServer:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()
