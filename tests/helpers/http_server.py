"""A local HTTP file server for download tests: serves bytes on 127.0.0.1 and counts requests.

    with FileServer({"/ckpt.pth": Route(data)}) as server:
        url = server.url("/ckpt.pth")
        ...
        assert server.requests["/ckpt.pth"] == 1
"""
import collections
import http.server
import re
import threading
from dataclasses import dataclass
from typing import Dict, Optional


@dataclass
class Route:
    """What the server answers for one path.

    status: HTTP status; body: the bytes announced in Content-Length; send_only: how many of
    them are actually sent before the connection closes (None: all), to simulate a cut download;
    hang: after those bytes, keep the connection open without sending (until the server stops);
    ranges: answer `Range: bytes=N-` with 206 and the rest of the body (else the whole body).
    """

    body: bytes = b""
    status: int = 200
    send_only: Optional[int] = None
    content_type: str = "application/octet-stream"
    hang: bool = False
    ranges: bool = False


class FileServer:
    """Serves `routes` (path -> Route) from a thread; unknown paths get 404. Stops on exit."""

    def __init__(self, routes: Dict[str, Route]):
        self.routes = dict(routes)
        self.requests: collections.Counter = collections.Counter()
        self.range_headers: list = []  # the Range header of each request (None without one)
        self._stop = threading.Event()
        self._httpd: Optional[http.server.ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    def url(self, path: str) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}{path}"

    def __enter__(self) -> "FileServer":
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                server.requests[self.path] += 1
                server.range_headers.append(self.headers.get("Range"))
                route = server.routes.get(self.path, Route(b"not found", status=404, content_type="text/plain"))
                asked = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                start = int(asked.group(1)) if asked and route.ranges and route.status == 200 else 0
                self.send_response(206 if start else route.status)
                self.send_header("Content-Type", route.content_type)
                self.send_header("Content-Length", str(len(route.body) - start))
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(route.body) - 1}/{len(route.body)}")
                self.end_headers()
                end = len(route.body) if route.send_only is None else max(route.send_only, start)
                self.wfile.write(route.body[start:end])
                self.wfile.flush()
                if route.hang:
                    server._stop.wait(30)
                self.close_connection = True

            def log_message(self, *args):  # keep test output quiet
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
