"""A TCP proxy on loopback in front of the test database, with faults a test switches on and off.

- ``cut()``: every connection is reset and new ones are refused (the listening socket is closed),
  as when a database host or its network goes away.
- ``hang()``: connections stay open but nothing is forwarded, and new ones are accepted and left
  unanswered, as with a database that stopped responding. The client waits for its timeouts.
- ``restore()``: back to forwarding; connections from a hang are reset.
- ``max_packet``: a client packet (MySQL framing) larger than this resets its connection, which is
  how a server's ``max_allowed_packet`` refusal reaches a client: as a lost connection.

One thread runs a selector loop; the control methods hand it work and wait until it is done, so a
fault is in force when the method returns.
"""

from __future__ import annotations

import queue
import random
import selectors
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

_RST = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a reset


class _Pair:
    """A client connection and its upstream, with a MySQL packet parser for the client's stream."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.header = b""
        self.remaining = 0

    def largest_packet(self, data: bytes) -> int:
        """Follow the client's packet framing (3-byte length, 1-byte sequence) through ``data``."""
        largest = 0
        view = memoryview(data)
        while view:
            if self.remaining:
                step = min(self.remaining, len(view))
                self.remaining -= step
                view = view[step:]
                continue
            need = 4 - len(self.header)
            self.header += bytes(view[:need])
            view = view[need:]
            if len(self.header) == 4:
                self.remaining = int.from_bytes(self.header[:3], "little")
                largest = max(largest, self.remaining)
                self.header = b""
        return largest


class FaultProxy:
    def __init__(self, target_dsn: str) -> None:
        parts = urlsplit(target_dsn)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 3306)
        self._target_dsn = parts
        self.max_packet: int | None = None
        self.port = 0
        self.accepted = 0
        self.resets = 0
        self._mode = "forward"
        self._selector = selectors.DefaultSelector()
        self._listener: socket.socket | None = None
        self._pairs: dict[socket.socket, _Pair] = {}
        self._stalled: list[socket.socket] = []
        self._work: queue.SimpleQueue[tuple[Callable[[], None], threading.Event]] = queue.SimpleQueue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._running = True
        self._listen()
        self._thread = threading.Thread(target=self._loop, name="faultproxy", daemon=True)
        self._thread.start()

    @property
    def dsn(self) -> str:
        """The target's DSN with the proxy as its host and port."""
        parts = self._target_dsn
        credentials = parts.netloc.rpartition("@")[0]
        netloc = f"{credentials}@127.0.0.1:{self.port}" if credentials else f"127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    # -- control (test thread) -------------------------------------------------------------------------
    def cut(self) -> None:
        self._do(self._cut)

    def hang(self) -> None:
        self._do(self._hang)

    def restore(self) -> None:
        self._do(self._restore)

    def close(self) -> None:
        self._do(self._cut)
        self._running = False
        self._wake_w.send(b"x")
        self._thread.join(5)
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _do(self, work: Callable[[], None]) -> None:
        done = threading.Event()
        self._work.put((work, done))
        self._wake_w.send(b"x")
        if not done.wait(10):
            raise RuntimeError("fault proxy did not answer")

    # -- the loop (proxy thread) -----------------------------------------------------------------------
    def _listen(self) -> None:
        """Listen on our port, chosen outside the kernel's ephemeral range on first use, so that no
        outgoing connection can take it while the listener is down."""
        for _ in range(200):
            port = self.port or random.randint(20000, 30000)
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                listener.bind(("127.0.0.1", port))
            except OSError:
                listener.close()
                if self.port:
                    raise
                continue
            listener.listen(64)
            self.port = port
            self._listener = listener
            self._selector.register(listener, selectors.EVENT_READ, "accept")
            return
        raise RuntimeError("no free port for the fault proxy")

    def _loop(self) -> None:
        while self._running:
            for key, _ in self._selector.select(0.5):
                sock: Any = key.fileobj
                if key.data == "wake":
                    sock.recv(4096)
                    self._run_work()
                elif key.data == "accept":
                    self._accept()
                elif sock in self._pairs:
                    self._forward(sock)

    def _run_work(self) -> None:
        while True:
            try:
                work, done = self._work.get_nowait()
            except queue.Empty:
                return
            try:
                work()
            finally:
                done.set()

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            client, _ = self._listener.accept()
        except OSError:
            return
        self.accepted += 1
        if self._mode == "hang":
            self._stalled.append(client)
            return
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            self._reset(client)
            return
        upstream.settimeout(None)
        pair = _Pair(client, upstream)
        for sock in (client, upstream):
            self._pairs[sock] = pair
            self._selector.register(sock, selectors.EVENT_READ, "data")

    def _forward(self, sock: socket.socket) -> None:
        pair = self._pairs[sock]
        try:
            data = sock.recv(1 << 16)
        except OSError:
            data = b""
        if not data:
            self._drop(pair)
            return
        if sock is pair.client and self.max_packet is not None and pair.largest_packet(data) > self.max_packet:
            self._drop(pair)
            return
        other = pair.upstream if sock is pair.client else pair.client
        try:
            other.sendall(data)
        except OSError:
            self._drop(pair)

    def _drop(self, pair: _Pair) -> None:
        for sock in (pair.client, pair.upstream):
            if self._pairs.pop(sock, None) is not None:
                self._selector.unregister(sock)
            self._reset(sock)

    def _reset(self, sock: socket.socket) -> None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RST)
        except OSError:
            pass
        sock.close()
        self.resets += 1

    def _drop_all(self) -> None:
        for pair in {id(p): p for p in self._pairs.values()}.values():
            self._drop(pair)
        for sock in self._stalled:
            self._reset(sock)
        self._stalled.clear()

    def _cut(self) -> None:
        self._mode = "cut"
        if self._listener is not None:
            self._selector.unregister(self._listener)
            self._listener.close()
            self._listener = None
        self._drop_all()

    def _hang(self) -> None:
        self._mode = "hang"
        for sock, pair in list(self._pairs.items()):  # keep them open, forward nothing
            self._selector.unregister(sock)
            if sock is pair.client:
                self._stalled.extend((pair.client, pair.upstream))
        self._pairs.clear()
        if self._listener is None:
            self._listen()

    def _restore(self) -> None:
        self._drop_all()
        self._mode = "forward"
        if self._listener is None:
            self._listen()
