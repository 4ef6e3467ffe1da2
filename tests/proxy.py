"""A TCP proxy whose replies can be held back: a server that did the work but whose answer is
late, as a congested or cut link makes it (a real Redis behind, nothing simulated but the wire)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

from docingest.embedded import free_port


class DelayingProxy:
    def __init__(self, upstream_port: int) -> None:
        self.port = free_port()
        self._upstream = upstream_port
        self.holding = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self._upstream))
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, replies: bool) -> None:
        """Replies wait while `holding` is set; the data is kept and sent once it clears."""
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                while replies and self.holding.is_set() and not self._closed:
                    time.sleep(0.05)
                target.sendall(data)
        for end in (source, target):
            with contextlib.suppress(OSError):
                end.close()

    def close(self) -> None:
        self._closed = True
        self._listener.close()
