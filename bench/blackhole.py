#!/usr/bin/env python3
"""A webhook target that accepts TCP connections and never answers (bench/run.sh, target_down).

    blackhole.py PORT

Listens on 127.0.0.1:PORT, prints `listening on 127.0.0.1:PORT`, accepts every connection, reads
and discards what arrives, never writes a byte and never closes (until the peer does): every
delivery attempt to it ends in the sender's timeout.
"""

import selectors
import socket
import sys


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    port = int(sys.argv[1])
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(1024)
    srv.setblocking(False)
    print(f"listening on 127.0.0.1:{port}", flush=True)
    sel = selectors.DefaultSelector()
    sel.register(srv, selectors.EVENT_READ)
    while True:
        for key, _ in sel.select():
            if key.fileobj is srv:
                try:
                    conn, _ = srv.accept()
                except BlockingIOError:
                    continue
                conn.setblocking(False)
                sel.register(conn, selectors.EVENT_READ)
            else:
                conn = key.fileobj
                try:
                    data = conn.recv(65536)
                except (BlockingIOError, ConnectionError):
                    data = b"x"
                if not data:  # the peer gave up: forget the connection
                    sel.unregister(conn)
                    conn.close()


if __name__ == "__main__":
    main()
