"""A local HTTP file server for download tests: serves bytes on 127.0.0.1 and counts requests.

    with FileServer({"/ckpt.pth": Route(data)}) as server:
        url = server.url("/ckpt.pth")
        ...
        assert server.requests["/ckpt.pth"] == 1
"""
import collections
import http.server
import threading
from dataclasses import dataclass
from typing import Dict, Optional


@dataclass
class Route:
    """What the server answers for one path.

    status: HTTP status; body: the bytes announced in Content-Length; send_only: how many of
    them are actually sent before the connection closes (None: all), to simulate a cut download.
    """

    body: bytes = b""
    status: int = 200
    send_only: Optional[int] = None
    content_type: str = "application/octet-stream"


class FileServer:
    """Serves `routes` (path -> Route) from a thread; unknown paths get 404. Stops on exit."""

    def __init__(self, routes: Dict[str, Route]):
        self.routes = dict(routes)
        self.requests: collections.Counter = collections.Counter()
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
                route = server.routes.get(self.path, Route(b"not found", status=404, content_type="text/plain"))
                self.send_response(route.status)
                self.send_header("Content-Type", route.content_type)
                self.send_header("Content-Length", str(len(route.body)))
                self.end_headers()
                body = route.body if route.send_only is None else route.body[: route.send_only]
                self.wfile.write(body)
                self.wfile.flush()
                self.close_connection = True

            def log_message(self, *args):  # keep test output quiet
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
