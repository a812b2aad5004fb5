"""A policy server across zmq as a `Policy`: the rig's side of `rig serve`.

Each call waits at most `timeout_s`. A REQ socket that got no reply is stuck (it may not send
again), so on a timeout the client drops it and connects a fresh one ("lazy pirate"): the next call
works as soon as the server is back. A server behind CurveZMQ answers only clients that know its
public key and hold an authorized client key; any other client sees silence, i.e. a timeout.
Use one client from one thread.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import zmq
import zmq.auth

from policy.interface import Guidance, PolicyInfo, PolicyObservation
from policy.wire import PROTOCOL, WireError, chunk_actions, decode, encode, infer_request


class PolicyUnavailable(RuntimeError):
    """No reply in time: the server is down, unreachable, busy past the timeout, or refused our keys."""


class PolicyRemoteError(RuntimeError):
    """The server replied with an error (or with something the rig must not use)."""


@dataclass(frozen=True)
class CurveKeys:
    server_public: bytes
    client_public: bytes
    client_secret: bytes

    @classmethod
    def load(cls, server_key: Path | None, client_key: Path | None) -> CurveKeys | None:
        """The keys from their files; None without files (plain zmq)."""
        if server_key is None and client_key is None:
            return None
        if server_key is None or client_key is None:
            raise ValueError(
                "CurveZMQ needs both keys: server_key (the server's server.key) "
                "and client_key (an authorized client's .key_secret)"
            )
        server_public, _ = zmq.auth.load_certificate(server_key)
        client_public, client_secret = zmq.auth.load_certificate(client_key)
        if client_secret is None:
            raise ValueError(f"{client_key} holds no secret key: pass the client's .key_secret file")
        return cls(server_public, client_public, client_secret)


class PolicyClient:
    def __init__(
        self,
        endpoint: str,
        timeout_s: float = 2.0,
        server_key: Path | None = None,
        client_key: Path | None = None,
    ) -> None:
        self.endpoint, self.timeout_s = endpoint, timeout_s
        self._curve = CurveKeys.load(server_key, client_key)
        self._context = zmq.Context()
        self._socket = self._connect()
        self._info: PolicyInfo | None = None
        self._max_message_bytes: int | None = None  # the server's limit, once info() has said it
        self._last_id = 0

    def _connect(self) -> zmq.Socket[bytes]:
        socket = self._context.socket(zmq.REQ)
        socket.linger = 0
        if self._curve is not None:
            socket.curve_serverkey = self._curve.server_public
            socket.curve_publickey = self._curve.client_public
            socket.curve_secretkey = self._curve.client_secret
        socket.connect(self.endpoint)
        return socket

    def info(self) -> PolicyInfo:
        if self._info is None:
            reply = self._request({"kind": "info"}, "info")
            server = reply.get("server") or {}
            protocol = server.get("protocol")
            if isinstance(server.get("max_message_bytes"), int):
                self._max_message_bytes = server["max_message_bytes"]
            if protocol != PROTOCOL:
                raise PolicyRemoteError(
                    f"{self.endpoint} speaks wire protocol {protocol}, this rig {PROTOCOL}: update one side"
                )
            try:
                self._info = PolicyInfo.from_dict(reply["info"])
            except (KeyError, TypeError, ValueError) as error:
                raise PolicyRemoteError(f"{self.endpoint} sent malformed policy info: {error!r}") from error
        return self._info

    def infer(self, observation: PolicyObservation, guidance: Guidance | None = None) -> np.ndarray:
        self._last_id += 1
        reply = self._request(infer_request(self._last_id, observation, guidance), "chunk")
        if reply.get("id") != self._last_id:
            raise PolicyRemoteError(f"{self.endpoint} answered request {reply.get('id')} to {self._last_id}")
        try:
            actions = chunk_actions(reply.get("actions"))
        except WireError as error:
            raise PolicyRemoteError(f"{self.endpoint} sent actions the rig must not run: {error}") from error
        return actions.astype(np.float64)

    def ping(self) -> float:
        """Seconds for a round trip to the server (without inference)."""
        start = time.perf_counter()
        self._request({"kind": "ping"}, "pong")
        return time.perf_counter() - start

    def _request(self, message: dict[str, Any], expected: str) -> dict[str, Any]:
        data = encode({**message, "wait_s": self.timeout_s})  # the server drops it once we gave up
        if self._max_message_bytes is not None and len(data) > self._max_message_bytes:
            raise PolicyRemoteError(
                f"a {message['kind']} request of {len(data) / 2**20:.1f} MiB exceeds {self.endpoint}'s limit "
                f"of {self._max_message_bytes / 2**20:.1f} MiB: send smaller camera images"
            )
        try:
            self._socket.send(data, zmq.NOBLOCK)
            answered = self._socket.poll(round(self.timeout_s * 1000)) != 0
        except zmq.Again:
            answered = False
        if not answered:
            self._socket.close(linger=0)
            self._socket = self._connect()
            keys = "are the keys right" if self._curve else "does it need CurveZMQ keys"
            raise PolicyUnavailable(
                f"no reply from {self.endpoint} in {self.timeout_s} s: "
                f"is `rig serve` running there, and {keys}?"
            )
        try:
            reply = decode(self._socket.recv())
        except WireError as error:
            raise PolicyRemoteError(f"a malformed reply from {self.endpoint}: {error}") from error
        kind = reply.get("kind") if isinstance(reply, dict) else None
        if kind == "error":
            raise PolicyRemoteError(f"policy server {self.endpoint}: {reply.get('message')}")
        if kind != expected:
            raise PolicyRemoteError(f"{self.endpoint} replied {kind!r} to a {message['kind']!r} request")
        return reply

    def close(self) -> None:
        self._socket.close(linger=0)
        self._context.term()

    def __enter__(self) -> PolicyClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()
