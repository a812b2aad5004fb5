"""The policy server and client over real zmq sockets on loopback, serving a real (tiny) π0."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq.auth
from synthetic_store import CAMERAS, synthetic_frame, synthetic_qpos

from policy.client import PolicyClient, PolicyRemoteError, PolicyUnavailable
from policy.infer import LocalPolicy, PolicyOutputError
from policy.interface import Guidance, Policy, PolicyInfo, PolicyObservation
from policy.keys import KeyPaths, ensure_keys
from policy.server import InsecureBindError, PolicyServer, ServerLimits, check_bind, is_loopback
from policy.wire import ARRAY_EXT, WireError, decode, encode, infer_request, read_infer_request
from rig.cli import main

ANY_PORT = "tcp://127.0.0.1:*"
SHORT = 0.5  # the client timeout where a test expects no reply


@pytest.fixture
def policy(checkpoint: Path) -> LocalPolicy:
    return LocalPolicy.from_checkpoint(checkpoint, device="cpu", seed=0)


POLICY_CAMERAS = CAMERAS[:1]  # what the test checkpoint reads (rig serve refuses other cameras)


def observation(step: int = 0) -> PolicyObservation:
    images = {camera: synthetic_frame(camera, step, (48, 64)) for camera in POLICY_CAMERAS}
    return PolicyObservation(synthetic_qpos(0, step).astype(np.float64), images, "transfer the cube")


@contextmanager
def serving(policy: Policy, bind: str = ANY_PORT, keys: Path | None = None) -> Iterator[PolicyServer]:
    """A server answering from a thread until the block ends."""
    with serving_server(PolicyServer(policy, bind, keys, say=lambda _: None)) as server:
        yield server


@contextmanager
def serving_server(server: PolicyServer) -> Iterator[PolicyServer]:
    stop = threading.Event()
    thread = threading.Thread(target=server.serve, args=(stop,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        stop.set()
        thread.join(timeout=2.0)
        assert not thread.is_alive(), "serve() did not notice its stop event"
        server.close()


@dataclass
class Wrapped:
    """A policy that records what it was asked and can replace the chunk it returns."""

    inner: Policy
    change: Callable[[np.ndarray], np.ndarray] = lambda actions: actions
    calls: list[tuple[PolicyObservation, Guidance | None]] = field(default_factory=list)

    def info(self) -> PolicyInfo:
        return self.inner.info()

    def infer(self, observation: PolicyObservation, guidance: Guidance | None = None) -> np.ndarray:
        self.calls.append((observation, guidance))
        return self.change(self.inner.infer(observation, guidance))


def unavailable_within(call: Callable[[], object], timeout_s: float) -> str:
    start = time.monotonic()
    with pytest.raises(PolicyUnavailable) as caught:
        call()
    assert time.monotonic() - start < timeout_s + 0.5  # the poll, plus a fresh socket
    return str(caught.value)


def test_a_served_policy_answers_as_the_local_one(policy: LocalPolicy, checkpoint: Path) -> None:
    local = LocalPolicy.from_checkpoint(checkpoint, device="cpu", seed=0)
    with serving(policy) as server, PolicyClient(server.endpoint) as client:
        assert client.ping() < 1.0
        assert client.info() == local.info() and client.info().action_horizon == 10
        actions = client.infer(observation())
        expected = local.infer(observation())
        assert actions.shape == (10, 14) and actions.dtype == np.float64 and np.isfinite(actions).all()
        np.testing.assert_array_equal(actions, expected)  # float32 on the wire loses nothing π0 made


def test_guidance_and_the_observation_reach_the_served_policy(policy: LocalPolicy) -> None:
    wrapped = Wrapped(policy)
    guidance = Guidance(np.linspace(-1, 1, 8 * 14).reshape(8, 14), frozen=2, execute=3)
    with serving(wrapped) as server, PolicyClient(server.endpoint) as client:
        client.infer(observation(5))
        client.infer(observation(6), guidance)
    (first, none), (second, received) = wrapped.calls
    assert none is None and received is not None
    np.testing.assert_allclose(received.actions, guidance.actions, rtol=1e-6)
    assert (received.frozen, received.execute) == (2, 3)
    assert second.prompt == "transfer the cube" and set(second.images) == set(POLICY_CAMERAS)
    np.testing.assert_array_equal(second.images["cam_high"], observation(6).images["cam_high"])
    np.testing.assert_allclose(first.state, observation(5).state, rtol=1e-6)


def test_a_policy_failure_is_a_remote_error_and_the_server_keeps_serving(policy: LocalPolicy) -> None:
    def fail(_: np.ndarray) -> np.ndarray:
        raise PolicyOutputError("π0 returned non-finite actions; the rig holds")

    nan = Wrapped(policy, change=lambda actions: np.full_like(actions, np.nan))
    with serving(nan) as server, PolicyClient(server.endpoint) as client:
        with pytest.raises(PolicyRemoteError, match=r"UnsafeChunk: .* with NaN or inf"):
            client.infer(observation())
        assert client.ping() < 1.0
    with (
        serving(Wrapped(policy, change=fail)) as server,
        PolicyClient(server.endpoint) as client,
        pytest.raises(PolicyRemoteError, match="PolicyOutputError: π0 returned non-finite"),
    ):
        client.infer(observation())


def test_the_wire_carries_arrays_exactly_and_rejects_malformed_data(policy: LocalPolicy) -> None:
    arrays = [
        np.arange(12, dtype=np.uint8).reshape(3, 4),
        np.arange(6, dtype=">i8")[::2],  # big-endian and not contiguous
        np.zeros((2, 0, 3), np.float32),
        np.array([[True, False]]),
        np.float64(np.pi),
    ]
    decoded = decode(encode({"arrays": arrays, "id": 3}))
    for sent, got in zip(arrays, decoded["arrays"], strict=True):
        np.testing.assert_array_equal(got, sent)
    assert all(a.flags.writeable and a.flags.c_contiguous for a in decoded["arrays"][:4])

    def ext(dtype: object, shape: object, raw: object) -> bytes:
        return msgpack.packb(msgpack.ExtType(ARRAY_EXT, msgpack.packb([dtype, shape, raw])))

    bad = {
        b"\xc1": "not a msgpack message",
        encode([1, 2])[:-1]: "not a msgpack message",
        ext("complex128", [1], bytes(16)): "dtype 'complex128' is not allowed",
        ext("float32", [2, 3], bytes(20)): "shape \\(2, 3\\) needs 24 bytes, got 20",
        ext("uint8", [-1], b""): "not a list of at most",
        msgpack.packb(msgpack.ExtType(9, b"")): "unknown msgpack ext type 9",
    }
    for data, message in bad.items():
        with pytest.raises(WireError, match=message):
            decode(data)
    for unsendable in (np.array(["text"]), np.zeros(2, np.complex64), object()):
        with pytest.raises(WireError):
            encode(unsendable)
    request = decode(encode({"kind": "infer", "state": np.zeros(7), "images": {}, "prompt": ""}))
    with pytest.raises(WireError, match="'state' must be a \\(14\\) array, got float64 \\(7,\\)"):
        read_infer_request(request)

    with PolicyServer(policy, ANY_PORT, say=lambda _: None) as server:  # the reply to nonsense is an error
        assert decode(server.respond(b"\xc1"))["kind"] == "error"
        reply = decode(server.respond(encode({**request, "id": 4})))
        assert reply == {"kind": "error", "id": 4, "message": reply["message"]}
        assert reply["message"].startswith("WireError: 'state' must be a (14) array")
        assert "unknown request kind 'dance'" in decode(server.respond(encode({"kind": "dance"})))["message"]
        images = {"cam_high": np.zeros((4, 4), np.uint8)}
        reply = decode(server.respond(encode({**request, "state": np.zeros(14), "images": images})))
        assert "image 'cam_high' must be an (h, w, 3) uint8 array, got uint8 (4, 4)" in reply["message"]


def test_curve_admits_only_authorized_clients_that_know_the_server(
    policy: LocalPolicy, tmp_path: Path
) -> None:
    keys = ensure_keys(tmp_path / "keys")
    assert keys.created and [p.name for p in keys.authorized_keys()] == ["client.key"]
    assert keys.client_secret.stat().st_mode & 0o077 == 0 and keys.server_secret.stat().st_mode & 0o077 == 0
    assert not ensure_keys(keys.folder).created
    strangers = tmp_path / "strangers"
    strangers.mkdir()
    other_public, other_secret = map(Path, zmq.auth.create_certificates(strangers, "other"))
    with serving(policy, keys=keys.folder) as server:
        with PolicyClient(server.endpoint, 2.0, keys.server_public, keys.client_secret) as client:
            assert client.info().config == "pi0-tiny"
            assert client.infer(observation()).shape == (10, 14)
        for server_key, client_key in (
            (other_public, keys.client_secret),  # the wrong server: its reply could not be trusted
            (keys.server_public, other_secret),  # a client the server does not know
        ):
            with PolicyClient(server.endpoint, SHORT, server_key, client_key) as client:
                assert "are the keys right?" in unavailable_within(client.ping, SHORT)
        with PolicyClient(server.endpoint, SHORT) as client:  # no Curve at all
            assert "does it need CurveZMQ keys?" in unavailable_within(client.ping, SHORT)


def test_a_client_survives_the_server_stopping_and_coming_back(policy: LocalPolicy) -> None:
    with serving(policy) as server:
        endpoint = server.endpoint
        client = PolicyClient(endpoint, SHORT)
        client.ping()
    with client:
        message = unavailable_within(lambda: client.infer(observation()), SHORT)
        assert message.startswith(f"no reply from {endpoint} in {SHORT} s")
        unavailable_within(client.ping, SHORT)  # a fresh socket, still nobody there
        with serving(policy, bind=endpoint):
            assert client.infer(observation()).shape == (10, 14)


def test_network_binds_need_keys(
    policy: LocalPolicy, checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert all(map(is_loopback, ("tcp://127.0.0.1:5555", "tcp://localhost:1", "tcp://[::1]:2", "ipc:///x")))
    assert not any(
        map(is_loopback, ("tcp://0.0.0.0:5555", "tcp://*:5555", "tcp://eth0:1", "tcp://10.0.0.2:1"))
    )
    with pytest.raises(InsecureBindError, match="anyone on the network could drive the robot"):
        PolicyServer(policy, "tcp://0.0.0.0:*")
    assert check_bind("tcp://0.0.0.0:1", None, allow_insecure=True) is not None
    assert check_bind("tcp://0.0.0.0:1", Path("keys"), allow_insecure=False) is None

    assert main(["serve", "--checkpoint", str(checkpoint), "--bind", "tcp://*:5555"]) == 2
    assert "anyone on the network could drive the robot" in capsys.readouterr().err
    assert main(["serve", "--checkpoint", str(checkpoint.parent / "missing")]) == 1
    error = capsys.readouterr().err
    assert error.startswith("rig serve: ") and error.count("\n") == 1


def test_rig_serve_serves_until_interrupted(checkpoint: Path, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "rig.cli", "serve", "--checkpoint", str(checkpoint), "--bind", ANY_PORT,
               "--keys", str(tmp_path / "keys"), "--device", "cpu"]  # fmt: skip
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in child.stdout or ():
            lines.put(line.rstrip())

    threading.Thread(target=read, daemon=True).start()
    try:
        said = [lines.get(timeout=60)]
        while said[-1] != "ready; ^C stops":
            said.append(lines.get(timeout=60))
        text = "\n".join(said)
        assert "created CurveZMQ keys" in text and "CurveZMQ on" in text and "1 authorized client key" in text
        endpoint = re.search(r"serving pi0-tiny \(step 1, .*\) on (tcp://127\.0\.0\.1:\d+)", text)
        assert endpoint is not None, text
        keys = KeyPaths(tmp_path / "keys", created=False)
        with PolicyClient(endpoint[1], 5.0, keys.server_public, keys.client_secret) as client:
            assert client.infer(observation()).shape == (10, 14)
        os.kill(child.pid, signal.SIGINT)
        assert child.wait(timeout=10) == 0
    finally:
        child.kill()
        child.wait()


# ---- hostile and abusive clients -----------------------------------------------------------------


def raw_request(endpoint: str, frames: list[bytes], timeout_s: float) -> list[bytes] | None:
    """Send `frames` from a plain REQ socket; the reply's frames, or None when none came in time."""
    context = zmq.Context.instance()
    socket = context.socket(zmq.REQ)
    socket.linger = 0
    socket.connect(endpoint)
    try:
        socket.send_multipart(frames)
        if not socket.poll(round(timeout_s * 1000)):
            return None
        return socket.recv_multipart()
    finally:
        socket.close(linger=0)


def test_a_message_of_several_frames_gets_an_error_and_the_server_keeps_serving(policy: LocalPolicy) -> None:
    with serving(policy) as server:
        reply = raw_request(server.endpoint, [encode({"kind": "ping"}), b"x"], 5.0)
        assert reply is not None and len(reply) == 1
        assert decode(reply[0])["message"] == "WireError: a request is one frame, got 2"
        dealer = zmq.Context.instance().socket(zmq.DEALER)  # no REQ envelope at all
        dealer.linger = 0
        dealer.connect(server.endpoint)
        dealer.send_multipart([b"junk", b"more", b"frames"])
        assert dealer.poll(5000)
        assert decode(dealer.recv_multipart()[-1])["kind"] == "error"
        dealer.close(linger=0)
        with PolicyClient(server.endpoint, 5.0) as client:
            assert client.ping() < 1.0
            assert client.infer(observation()).shape == (10, 14)


def test_an_oversized_message_is_refused_unread_while_others_are_served(policy: LocalPolicy) -> None:
    limits = ServerLimits(max_message_bytes=2**20, max_pending_bytes=2**21)
    server = PolicyServer(policy, ANY_PORT, say=lambda _: None, limits=limits)
    with serving_server(server):
        huge = {"kind": "infer", "id": 1, "blob": bytes(8 * 2**20)}
        answers: list[list[bytes] | None] = []
        sender = threading.Thread(
            target=lambda: answers.append(raw_request(server.endpoint, [encode(huge)], 3.0))
        )
        sender.start()
        with PolicyClient(server.endpoint, 2.0) as client:
            assert client.ping() < 1.0
            assert client.info().cameras == POLICY_CAMERAS
            big = PolicyObservation(observation().state, {"cam_high": np.zeros((700, 700, 3), np.uint8)}, "x")
            with pytest.raises(PolicyRemoteError, match=r"exceeds .* limit of 1\.0 MiB"):
                client.infer(big)  # the client knows the limit from info and says so itself
        sender.join()
        assert answers == [None]  # disconnected unread: no reply, no memory spent on it


def test_requests_whose_clients_gave_up_are_not_computed(policy: LocalPolicy) -> None:
    slow = Wrapped(policy, change=lambda actions: (time.sleep(0.6), actions)[1])
    with serving(slow) as server:
        clients = [PolicyClient(server.endpoint, 0.3) for _ in range(5)]
        threads = [threading.Thread(target=_infer_quietly, args=(client,)) for client in clients]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        time.sleep(1.0)  # the model finishes the first; the rest waited past their clients' 0.3 s
        for client in clients:
            client.close()
        assert len(slow.calls) == 1 and server.dropped_stale == 4
        with PolicyClient(server.endpoint, 5.0) as client:
            assert client.infer(observation()).shape == (10, 14)


def test_a_flood_of_large_requests_gets_busy_replies_and_memory_stays_bounded(checkpoint: Path) -> None:
    """24 clients send 12 MB each at once (before: all queued in the server, and the memory kept)."""
    command = [sys.executable, "-m", "rig.cli", "serve", "--checkpoint", str(checkpoint), "--bind", ANY_PORT,
               "--device", "cpu"]  # fmt: skip
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        endpoint = _serving_endpoint(child)
        with PolicyClient(endpoint, 5.0) as client:
            client.ping()
        before = _memory_mb(child.pid, "VmRSS")
        image = np.zeros((2000, 2000, 3), np.uint8)  # 12 MB, a valid size
        request = encode(
            {**infer_request(0, PolicyObservation(np.zeros(14), {"cam_high": image}, "x"), None)}
        )
        replies: list[list[bytes] | None] = []
        threads = [
            threading.Thread(target=lambda: replies.append(raw_request(endpoint, [request], 60.0)))
            for _ in range(24)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        kinds = sorted(decode(reply[0])["kind"] for reply in replies if reply is not None)
        assert len(kinds) == 24 and "chunk" in kinds, kinds  # every request was answered
        busy = [r for r in replies if r is not None and "busy" in decode(r[0]).get("message", "")]
        assert busy, "no request was turned away"
        peak, after = _memory_mb(child.pid, "VmHWM"), _memory_mb(child.pid, "VmRSS")
        assert peak - before < 400, (before, peak, after)
        assert after - before < 100, (before, peak, after)
    finally:
        child.kill()
        child.wait()


def _infer_quietly(client: PolicyClient) -> None:
    with contextlib.suppress(PolicyUnavailable):
        client.infer(observation())


def _serving_endpoint(child: subprocess.Popen[str]) -> str:
    assert child.stdout is not None
    for line in child.stdout:
        found = re.search(r" on (tcp://127\.0\.0\.1:\d+)$", line.strip())
        if found:
            return found[1]
    raise AssertionError("rig serve ended before serving")


def _memory_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} for {pid}")


def test_observations_that_do_not_fit_the_policy_are_refused_with_what_is_wrong(policy: LocalPolicy) -> None:
    good = infer_request(7, observation(), None)
    image = observation().images["cam_high"]
    guidance = {"actions": np.zeros((5, 14), np.float32), "frozen": 2, "execute": 3}
    bad = {
        "is 0x0: each side must be 16..4096": {"images": {"cam_high": np.zeros((0, 0, 3), np.uint8)}},
        "is 20000x1: each side": {"images": {"cam_high": np.zeros((1, 20000, 3), np.uint8)}},
        "is 400x50: .* at most 4 times": {"images": {"cam_high": np.zeros((50, 400, 3), np.uint8)}},
        "unknown camera\\(s\\) 'cam_nope'; this policy reads cam_high": {
            "images": {"cam_high": image, "cam_nope": image}
        },
        "no images: this policy reads cam_high": {"images": {}},
        "the state holds NaN": {"state": np.full(14, np.nan, np.float32)},
        "frozen=1000000000, execute=3: need": {"guidance": {**guidance, "frozen": 10**9}},
        "frozen=2, execute=0": {"guidance": {**guidance, "execute": 0}},
        "guidance actions must be \\(k, 14\\) with 1 <= k <= 10": {
            "guidance": {**guidance, "actions": np.zeros((11, 14), np.float32)}
        },
        "guidance actions hold NaN": {
            "guidance": {**guidance, "actions": np.full((5, 14), np.inf, np.float32)}
        },
    }
    with PolicyServer(policy, ANY_PORT, say=lambda _: None) as server:
        for message, change in bad.items():
            reply = server.respond(encode({**good, **change}))
            assert reply is not None
            answer = decode(reply)
            assert answer["kind"] == "error" and answer["id"] == 7, change
            assert re.search("^ObservationError: .*" + message, answer["message"]), answer["message"]
        reply = server.respond(encode(good))
        assert reply is not None and decode(reply)["kind"] == "chunk"


def test_hundreds_of_malformed_messages_each_get_a_reply_and_the_server_keeps_serving(
    policy: LocalPolicy,
) -> None:
    rng = np.random.default_rng(400)
    good = infer_request(1, observation(), None)
    variants: list[object] = [
        {"kind": "infer"},
        {"kind": None},
        {"kind": ["infer"]},
        {**good, "state": "fourteen"},
        {**good, "images": [1, 2]},
        {**good, "images": {"cam_high": np.zeros((48, 64, 4), np.uint8)}},
        {**good, "prompt": 7},
        {**good, "guidance": {"actions": np.zeros((3, 14), np.float32), "frozen": -1, "execute": 2}},
        {**good, "guidance": {"actions": np.zeros((3, 14), np.float32), "frozen": True, "execute": 2}},
        {**good, "wait_s": "forever"},
        [good],
        "infer",
        None,
    ]
    with serving(policy) as server:
        socket = zmq.Context.instance().socket(zmq.REQ)
        socket.linger = 0
        socket.connect(server.endpoint)
        kinds = []
        for index in range(400):
            if index % 2:
                message = rng.bytes(int(rng.integers(1, 200)))
            else:
                message = encode(variants[index // 2 % len(variants)])
            socket.send(message)
            assert socket.poll(5000), f"no reply to message {index}"
            kinds.append(decode(socket.recv())["kind"])
        socket.close(linger=0)
        assert kinds == ["error"] * 400
        with PolicyClient(server.endpoint, 5.0) as client:
            assert client.infer(observation()).shape == (10, 14)
