"""`rig serve`'s engine: a `Policy` behind a zmq ROUTER socket (clients use REQ), one inference at a time.

One inference at a time because the model lives on one device: a second request waits rather than
racing the first for the GPU. The socket thread keeps reading while the model works, so what one
client sends costs the others nothing but its turn:
- any message gets a reply, an error one when anything fails (a malformed envelope or a request of
  several frames included: a REP socket would have been left unable to send), so a rig never waits
  on a server that is still up; ping and info are answered at once, never behind an inference;
- a message over `ServerLimits.max_message_bytes` is refused by zmq before it is read (its sender
  is disconnected and sees a timeout); requests waiting for the model hold at most
  `max_pending_bytes`, beyond which the server answers "busy" at once, so memory stays bounded
  however many clients send at once;
- a request is checked against the policy's cameras, image sizes and horizon before it waits, and
  one that waited longer than its client said it would wait (`wait_s`, at most `max_wait_s`) is
  dropped unanswered by the model: its client has given up.
The server binds to loopback unless it has CurveZMQ keys: a policy server on the network without
them lets anyone on the network drive the robot.
"""

from __future__ import annotations

import collections
import ctypes
import ipaddress
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from policy.interface import Guidance, Policy, PolicyObservation
from policy.keys import KeyPaths, ensure_keys
from policy.validate import check_request
from policy.wire import PROTOCOL, WireError, chunk_actions, decode, encode, read_infer_request

__all__ = [
    "DEFAULT_BIND",
    "InsecureBindError",
    "KeyPaths",
    "PolicyServer",
    "ServerLimits",
    "check_bind",
    "ensure_keys",
]

DEFAULT_BIND = "tcp://127.0.0.1:5555"
POLL_MS = 100  # how soon serve() notices its stop event
RESULTS = "inproc://policy-server-results"  # the model thread hands its replies to the socket thread
M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES = -3, 2**20  # glibc's mallopt parameter, and its value here
Envelope = list[bytes]  # the ROUTER's routing frames of a request, sent back in front of its reply


@dataclass(frozen=True)
class ServerLimits:
    """What requests may cost the server. Three cameras at 640x480 make a 2.8 MB request, four at
    1280x720 an 11 MB one; the policy scales every image down to its own size (`PolicyInfo.image_size`)."""

    max_message_bytes: int = 16 * 2**20  # larger messages are refused by zmq unread
    max_pending_bytes: int = 48 * 2**20  # requests waiting for the model, all together
    max_wait_s: float = 10.0  # a request older than this (or than its client's wait_s) is dropped

    def __post_init__(self) -> None:
        if self.max_message_bytes < 1 or self.max_pending_bytes < self.max_message_bytes:
            raise ValueError("max_message_bytes must be positive and max_pending_bytes at least as large")
        if self.max_wait_s <= 0:
            raise ValueError("max_wait_s must be positive")


@dataclass(frozen=True, eq=False)
class _Job:
    """An infer request waiting for the model."""

    envelope: Envelope
    request_id: int | None
    observation: PolicyObservation
    guidance: Guidance | None
    size: int
    received: float
    wait_s: float


class InsecureBindError(ValueError):
    """A bind reachable from the network without CurveZMQ."""


class UnsafeChunk(RuntimeError):
    """The policy returned actions the rig must not execute (wrong shape, NaN, inf)."""


class ServerBusy(RuntimeError):
    """More requests wait for the model than the server keeps in memory."""


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


def return_freed_memory_to_the_os() -> bool:
    """Make large buffers go back to the OS when freed: glibc raises its mmap threshold as large
    blocks are freed and then keeps later ones in the heap, so after a burst of large requests a
    server would keep hundreds of MB it no longer uses. A fixed 1 MiB threshold maps each large
    buffer on its own. Process-wide (for the `rig serve` process); False where libc is not glibc."""
    try:
        return bool(ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    except (OSError, AttributeError):
        return False


class PolicyServer:
    def __init__(
        self,
        policy: Policy,
        bind: str = DEFAULT_BIND,
        keys: Path | None = None,
        allow_insecure: bool = False,
        say: Callable[[str], None] = print,
        limits: ServerLimits | None = None,
    ) -> None:
        warning = check_bind(bind, keys, allow_insecure)
        if warning:
            say(warning)
        self.policy, self._say = policy, say
        self.limits = limits or ServerLimits()
        self.keys = None if keys is None else ensure_keys(keys)
        self.dropped_stale = 0  # requests whose client had given up before the model was free
        self._context = zmq.Context()
        self._auth: ThreadAuthenticator | None = None
        self._socket = self._context.socket(zmq.ROUTER)
        self._socket.linger = 0
        self._socket.maxmsgsize = self.limits.max_message_bytes
        self._jobs: collections.deque[_Job] = collections.deque()
        self._jobs_lock = threading.Lock()
        self._job_ready = threading.Condition(self._jobs_lock)
        self._pending_bytes = 0
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

    # ---- the socket thread -----------------------------------------------------------------
    def serve(self, stop: threading.Event | None = None) -> None:
        """Answer requests until `stop` is set (or forever)."""
        stop = stop or threading.Event()
        results = self._context.socket(zmq.PAIR)
        results.linger = 0
        results.bind(RESULTS)
        worker_stop = threading.Event()
        worker = threading.Thread(target=self._work, args=(worker_stop,), name="policy-model", daemon=True)
        worker.start()
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        poller.register(results, zmq.POLLIN)
        try:
            while not stop.is_set():
                ready = dict(poller.poll(POLL_MS))
                if results in ready:
                    *envelope, reply = results.recv_multipart()
                    self._send(envelope, reply)
                if self._socket in ready:
                    self._receive()
        finally:
            worker_stop.set()
            with self._job_ready:
                self._job_ready.notify_all()
            worker.join()
            results.close(linger=0)

    def _receive(self) -> None:
        """Read one message, answer it or queue it for the model; never raises for what a peer sent."""
        frames = self._socket.recv_multipart(copy=False)
        envelope, body = _split(frames)
        if len(body) != 1:
            self._send(envelope, self._error(None, WireError(f"a request is one frame, got {len(body)}")))
            return
        size = len(body[0].buffer)
        try:
            reply = self.respond(body[0].buffer, envelope, size)
        except Exception as error:  # a reply is owed whatever went wrong
            reply = self._error(None, error)
        if reply is not None:
            self._send(envelope, reply)

    def _send(self, envelope: Envelope, reply: bytes) -> None:
        try:
            self._socket.send_multipart([*envelope, reply], zmq.NOBLOCK)
        except zmq.ZMQError as error:  # the peer's queue is full or it is gone: its loss alone
            self._say(f"reply not sent: {error}")

    def respond(
        self, data: bytes | memoryview, envelope: Envelope | None = None, size: int = 0
    ) -> bytes | None:
        """The encoded reply to one encoded request, or None when it was queued for the model (whose
        reply goes to `envelope` later). Without an envelope an inference runs here and now.
        Never raises, so every request gets a reply."""
        request_id = None
        try:
            message = decode(data)
            if not isinstance(message, dict):
                raise WireError(f"a request must be a map, got {type(message).__name__}")
            request_id = message.get("id") if isinstance(message.get("id"), int) else None
            kind = message.get("kind")
            if kind != "infer":
                return encode(self._answer_now(kind))
            observation, guidance = read_infer_request(message)
            check_request(observation, guidance, self.policy.info())
            job = _Job(envelope or [], request_id, observation, guidance, size or len(data),
                       time.monotonic(), self._wait_s(message))  # fmt: skip
            if envelope is None:
                return self._infer(job)
            self._queue(job)
            return None
        except Exception as error:  # a bad request or a failed inference: tell the rig, keep serving
            return self._error(request_id, error)

    def _answer_now(self, kind: Any) -> dict[str, Any]:
        if kind == "ping":
            return {"kind": "pong"}
        if kind == "info":
            server = {
                "version": _installed_version(),
                "protocol": PROTOCOL,
                "max_message_bytes": self.limits.max_message_bytes,
            }
            return {"kind": "info", "info": self.policy.info().to_dict(), "server": server}
        raise WireError(f"unknown request kind {kind!r}; expected info, infer or ping")

    def _wait_s(self, message: dict[str, Any]) -> float:
        """How long the request stays worth computing: as long as its client waits, within the limit."""
        wait = message.get("wait_s", self.limits.max_wait_s)
        if not isinstance(wait, int | float) or isinstance(wait, bool) or not 0 < wait < float("inf"):
            raise WireError(f"'wait_s' must be a positive number of seconds, got {wait!r}")
        return min(float(wait), self.limits.max_wait_s)

    def _queue(self, job: _Job) -> None:
        with self._job_ready:
            if self._pending_bytes + job.size > self.limits.max_pending_bytes:
                raise ServerBusy(
                    f"the server is busy: {len(self._jobs)} requests ({self._pending_bytes / 2**20:.1f} MiB) "
                    "wait for the model; try again shortly"
                )
            self._jobs.append(job)
            self._pending_bytes += job.size
            self._job_ready.notify()

    def _error(self, request_id: int | None, error: Exception) -> bytes:
        message = f"{type(error).__name__}: {error}"
        self._say(f"request {request_id}: {message}")
        return encode({"kind": "error", "id": request_id, "message": message})

    # ---- the model thread ------------------------------------------------------------------
    def _work(self, stop: threading.Event) -> None:
        results = self._context.socket(zmq.PAIR)
        results.linger = 0
        results.connect(RESULTS)
        try:
            while (job := self._next_job(stop)) is not None:
                results.send_multipart([*job.envelope, self._infer(job)])
        finally:
            results.close(linger=0)

    def _next_job(self, stop: threading.Event) -> _Job | None:
        """The oldest request whose client still waits; the stale ones before it are dropped."""
        with self._job_ready:
            while not stop.is_set():
                while self._jobs:
                    job = self._jobs.popleft()
                    self._pending_bytes -= job.size
                    waited = time.monotonic() - job.received
                    if waited <= job.wait_s:
                        return job
                    self.dropped_stale += 1
                    self._say(f"request {job.request_id}: dropped after {waited:.1f} s, its client gave up")
                self._job_ready.wait()
        return None

    def _infer(self, job: _Job) -> bytes:
        try:
            start = time.perf_counter()
            actions = self.policy.infer(job.observation, job.guidance)
            infer_s = time.perf_counter() - start
            try:
                checked = chunk_actions(np.asarray(actions))
            except WireError as error:
                raise UnsafeChunk(f"the policy returned actions the rig must not execute: {error}") from error
            return encode({"kind": "chunk", "id": job.request_id, "actions": checked, "infer_s": infer_s})
        except Exception as error:  # a failed inference: tell the rig, keep serving
            return self._error(job.request_id, error)

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


def _split(frames: list[zmq.Frame]) -> tuple[Envelope, list[zmq.Frame]]:
    """(routing frames, message frames) of what a ROUTER received: the peer's identity, then, from a
    REQ socket, an empty delimiter frame."""
    if len(frames) > 1 and len(frames[1].buffer) == 0:
        return [frames[0].bytes, b""], frames[2:]
    return [frames[0].bytes], frames[1:]


def _installed_version() -> str:
    """The rig package's version, from its installed metadata: the policy layer imports no `rig`."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rig")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"
