"""A threaded HTTP file server on 127.0.0.1 serving a folder of any fsspec filesystem.

The demo downloads its synthetic scenes through it, so img2dataset runs for real; tests plant 404s,
corrupt files and opt-out headers with it.
"""

from __future__ import annotations

import collections
import http.server
import mimetypes
import threading
import time
import urllib.parse

import fsspec


class LoopbackFileServer:
    """Context manager: serves root_uri at base_url; counts requests per path (for resume tests)."""

    def __init__(
        self, root_uri: str, extra_headers: dict[str, dict[str, str]] | None = None, delay_s: float = 0.0
    ):
        self.fs, self.root = fsspec.core.url_to_fs(root_uri)
        self.extra_headers = extra_headers or {}
        self.delay_s = delay_s  # per response: stands in for a slow remote host in tests and benchmarks
        self.requests: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None, "server not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def url_for(self, relative_path: str) -> str:
        return f"{self.base_url}/{urllib.parse.quote(relative_path)}"

    def __enter__(self) -> LoopbackFileServer:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                relative = urllib.parse.unquote(urllib.parse.urlparse(self.path).path).lstrip("/")
                with server._lock:
                    server.requests[relative] += 1
                if server.delay_s:
                    time.sleep(server.delay_s)
                full = f"{server.root}/{relative}"
                if ".." in relative.split("/") or not server.fs.isfile(full):
                    self.send_error(404)
                    return
                with server.fs.open(full, "rb") as handle:
                    body = handle.read()
                self.send_response(200)
                self.send_header(
                    "Content-Type", mimetypes.guess_type(relative)[0] or "application/octet-stream"
                )
                self.send_header("Content-Length", str(len(body)))
                for name, value in server.extra_headers.get(relative, {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format, *args):
                pass  # one line per image would drown the stage's own progress

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="loopback-http", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
