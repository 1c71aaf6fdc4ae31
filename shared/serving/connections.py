"""Connections that never finish a request are closed (slow loris).

uvicorn waits for a request's line and headers without end: a client sending a header line every 15 s
kept 19,900 connections open, and the hub held 19,923 of its 20,000 file descriptors (found by the
hostile client); a few hundred more and uploads, model files and new visitors would have failed.
`demohub serve` runs uvicorn's HTTP/1.1 protocol with a deadline: a connection on which no request
has arrived whole for HEADER_TIMEOUT_S is closed (an idle keep-alive one too, which uvicorn closes
after 5 s anyway). A request being answered, an upload's body and an event stream are not cut. One
address holds at most MAX_CONNECTIONS_PER_ADDRESS connections; the next is closed at once.
"""

from __future__ import annotations

import os
from collections import Counter

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

HEADER_TIMEOUT_S = float(os.environ.get("DEMOHUB_HEADER_TIMEOUT_S", 10))
# Connections one address may hold at once, open requests or not: 15,508 idle ones from one address in
# 15 s held 14,861 of the hub's 20,000 file descriptors (found by the hostile client). A local proxy's
# address is not capped: every visitor behind it shares it (the proxy caps them; deploy/haproxy.cfg).
MAX_CONNECTIONS_PER_ADDRESS = int(os.environ.get("DEMOHUB_MAX_CONNECTIONS_PER_ADDRESS", 512))
PROXY_ADDRESSES = ("127.0.0.1", "::1")
_connections: Counter[str] = Counter()


class HeaderDeadline(H11Protocol):
    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        peer = (transport.get_extra_info("peername") or ("",))[0]
        self._peer = None if peer in PROXY_ADDRESSES else peer
        if self._peer is not None:
            if _connections[self._peer] >= MAX_CONNECTIONS_PER_ADDRESS:
                self._peer = None
                transport.close()
                return
            _connections[self._peer] += 1
        self.loop.call_later(HEADER_TIMEOUT_S, self._close_if_no_new_request, self.cycle)

    def connection_lost(self, exc) -> None:
        if self._peer is not None:
            _connections[self._peer] -= 1
            if not _connections[self._peer]:
                del _connections[self._peer]
            self._peer = None
        super().connection_lost(exc)

    def _close_if_no_new_request(self, cycle_then) -> None:
        """Close the connection if it still waits for a request's head and none began since the last
        look (`cycle` is the request being or last answered); else look again later."""
        if self.transport.is_closing():
            return
        if self.conn.their_state is h11.IDLE and self.cycle is cycle_then:
            self.transport.close()
            return
        self.loop.call_later(HEADER_TIMEOUT_S, self._close_if_no_new_request, self.cycle)
