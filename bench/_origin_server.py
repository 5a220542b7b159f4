"""The benchmark's origin: one file served over HTTP/1.1 with Range support, run as its own process.

Usage: python bench/_origin_server.py FILE HOST PORT (prints "origin ready: http://HOST:PORT/"
once listening; bench/p2p.py runs it inside the origin's namespace with `ip netns exec`).

Rules kept:
- Rule 1: every path serves FILE. HEAD answers 200 with Content-Length and Accept-Ranges; a GET with
  `Range: bytes=a-b`, `bytes=a-` or `bytes=-n` answers 206 with Content-Range; a range past the end
  answers 416; any other GET answers 200 with the whole file.
- Rule 2: bodies go out with sendfile (socket.sendfile), so the origin costs little CPU on a
  2-core machine and the shaped link, not Python, is the bottleneck.
- Rule 3: connections are kept alive (HTTP/1.1) and each is served by its own thread; the process
  serves until it is terminated. It counts nothing: the benchmark reads the namespace's tx counter.

Written anew rather than importing tests/fixtures/origin.py, which serves bytes held in memory on
loopback and is test code.
"""

import http.server
import os
import re
import sys

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


def _handler(path: str) -> type[http.server.BaseHTTPRequestHandler]:
    size = os.path.getsize(path)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            """Stay quiet: one line per piece request would cost CPU the peers need."""

        def do_HEAD(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()

        def do_GET(self) -> None:
            wanted = self._range()
            if wanted is None:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            first, last, partial = wanted
            if partial:
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(last + 1 - first))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            self.wfile.flush()
            with open(path, "rb") as file:
                self.connection.sendfile(file, offset=first, count=last + 1 - first)

        def _range(self) -> tuple[int, int, bool] | None:
            """The inclusive range asked for and whether it is partial; None when unsatisfiable."""
            header = self.headers.get("Range")
            match = _RANGE.match(header or "")
            if match is None or match.groups() == ("", ""):
                return (0, size - 1, False)  # no Range, or one we do not parse: the whole file (as 200 would)
            start, end = match.groups()
            if start == "":
                first, last = max(0, size - int(end)), size - 1
            else:
                first, last = int(start), min(int(end) if end else size - 1, size - 1)
            return (first, last, True) if first <= last and first < size else None

    return Handler


def main() -> None:
    path, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    server = _Server((host, port), _handler(path))
    print(f"origin ready: http://{host}:{port}/", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
