"""A slow client holds no connection for long: request headers must be complete within the
header deadline (from the connection's opening, or the previous answer) and a body must
arrive within the body deadline, or the connection is closed (a 408 for the body). A real
uvicorn server on 127.0.0.1, with small deadlines; raw sockets play the slow clients."""
from __future__ import annotations

import json
import socket
import threading
import time

import pytest
import uvicorn

from multimodal_interest.bundle import Bundle
from multimodal_interest.recommend import Recommender
from multimodal_interest.serve_workers import uvicorn_config
from multimodal_interest.server import create_app
from serving_world import train_model, write_world

HEADERS, BODY = 1.0, 1.0  # seconds
GOOD = b'{"source": "a", "history": ["a3", "a17"]}'


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``(host, port)`` of the service over a small bundle, with deadlines of one second."""
    root = tmp_path_factory.mktemp("deadlines")
    dataset, store = write_world(root)
    Bundle.build(train_model(dataset, store, root / "run", epochs=1), dataset, store).save(root / "bundle", ("flat",))
    app = create_app(Recommender.load(root / "bundle", "flat"), body_timeout=BODY)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    served = uvicorn.Server(uvicorn_config(app, "127.0.0.1", port, header_timeout=HEADERS))
    thread = threading.Thread(target=served.run, daemon=True)
    thread.start()
    while not served.started:
        time.sleep(0.05)
    yield "127.0.0.1", port
    served.should_exit = True
    thread.join(10)


def connect(server) -> socket.socket:
    return socket.create_connection(server, timeout=10)


def request(body: bytes = GOOD, length: int | None = None) -> bytes:
    return (b"POST /users/embed HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n" % (len(body) if length is None else length)) + body


def read_until_closed(s: socket.socket) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    t, got = time.perf_counter(), b""
    while chunk := s.recv(65536):
        got += chunk
    return got, time.perf_counter() - t


def answer(s: socket.socket) -> tuple[int, bytes]:
    """One response read off a keep-alive connection: status and body."""
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    lines = head.split(b"\r\n")
    length = next(int(x.split(b":")[1]) for x in lines if x.lower().startswith(b"content-length:"))
    body = b""
    while len(body) < length:
        body += s.recv(length - len(body))
    return int(lines[0].split()[1]), body


@pytest.mark.parametrize("sent", [b"", b"POST /users/embed HTTP/1.1\r\nhost: x\r\ncontent-ty"])
def test_a_connection_that_never_completes_its_headers_is_closed(server, sent):
    with connect(server) as s:
        s.sendall(sent)
        got, took = read_until_closed(s)
    assert got == b"" and HEADERS * 0.8 < took < HEADERS + 2, took


def test_headers_trickled_a_byte_at_a_time_are_cut_off_at_the_deadline(server):
    """Each byte would reset an idle timer; the deadline counts from the connection's opening."""
    with connect(server) as s:
        t = time.perf_counter()
        for byte in request()[:60]:  # 6 s at this pace
            try:
                s.sendall(bytes([byte]))
            except OSError:  # reset: closed
                break
            time.sleep(0.1)
            if closed(s):
                break
        took = time.perf_counter() - t
    assert took < HEADERS + 1, took


def closed(s: socket.socket) -> bool:
    try:
        return s.recv(1, socket.MSG_DONTWAIT | socket.MSG_PEEK) == b""
    except BlockingIOError:  # open, nothing sent
        return False
    except ConnectionResetError:
        return True


def test_many_stalled_connections_are_all_closed(server):
    stalled = [connect(server) for _ in range(50)]
    try:
        for s in stalled:
            s.sendall(b"POST /recommend HTTP/1.1\r\nhost: x\r\n")
        time.sleep(HEADERS + 1.5)
        for s in stalled:
            s.settimeout(2)
            assert s.recv(1) == b""  # closed by the server
    finally:
        for s in stalled:
            s.close()


def test_the_next_request_on_a_kept_alive_connection_has_the_same_deadline(server):
    with connect(server) as s:
        s.sendall(request())
        assert answer(s)[0] == 200
        s.sendall(b"POST /users/embed HTTP/1.1\r\nho")
        got, took = read_until_closed(s)
    assert got == b"" and took < HEADERS + 2


def test_a_body_that_does_not_arrive_in_time_is_a_408_and_the_connection_closed(server):
    with connect(server) as s:
        s.sendall(request(GOOD[:10], length=len(GOOD)))  # headers whole, a tenth of the body
        got, took = read_until_closed(s)
    assert took < BODY + 2
    status, _, body = got.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 408") and "within" in json.loads(body)["detail"]


def test_a_slow_but_timely_client_is_served(server):
    """Headers and body in pieces, each deadline met: answered, and the connection kept."""
    with connect(server) as s:
        for _ in range(2):
            whole = request()
            s.sendall(whole[:30])
            time.sleep(HEADERS / 3)
            s.sendall(whole[30:-5])
            time.sleep(BODY / 3)
            s.sendall(whole[-5:])
            status, body = answer(s)
            assert status == 200 and json.loads(body)["vector"]
