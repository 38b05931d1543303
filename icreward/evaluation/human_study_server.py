"""The HTTP server of a human study (:mod:`icreward.evaluation.human_study`): a threaded server with a connection
limit and timeouts, and the request handler serving the page, the media and the answers API."""

from __future__ import annotations

import json
import logging
import re
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

if TYPE_CHECKING:
    from icreward.evaluation.human_study import HumanStudy

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_REQUEST_TIMEOUT",
    "StudyHTTPServer",
    "StudyRequestHandler",
    "StudyServer",
]

_MAX_BODY_BYTES = 64 * 1024
_CHUNK = 64 * 1024
#: Seconds a connection may stay silent (while sending a request or reading a response) before it is closed.
DEFAULT_REQUEST_TIMEOUT = 30.0
#: Connections served at once; beyond that the server answers 503 at once instead of starting another thread.
DEFAULT_MAX_CONNECTIONS = 64
_MAX_RANGE_DIGITS = 18  # byte offsets beyond 10**18 are not numbers a media file can have


class StudyServer:
    """A running study server: ``url`` to share, ``shutdown()`` to stop (also on leaving a ``with`` block)."""

    def __init__(self, httpd: ThreadingHTTPServer, thread: threading.Thread, cleanup=None):
        self._httpd = httpd
        self._thread = thread
        self._cleanup = cleanup
        self.host, self.port = httpd.server_address[:2]

    @property
    def active_connections(self) -> int:
        """Connections being served now (each holds one worker thread; at most ``max_connections``)."""
        return self._httpd.active_connections if self._httpd is not None else 0

    @property
    def url(self) -> str:
        # A wildcard bind is reachable locally through the loopback address.
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}/"

    def shutdown(self) -> None:
        """Stop serving, close the socket and remove the temporary media cache (idempotent)."""
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
        self._httpd = None
        if self._cleanup is not None:
            self._cleanup()

    def wait(self) -> None:
        """Block until the server stops (Ctrl-C stops it)."""
        try:
            while self._httpd is not None and self._thread.is_alive():
                self._thread.join(timeout=0.5)
        except KeyboardInterrupt:
            pass
        finally:
            self.shutdown()

    def __enter__(self) -> StudyServer:
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        return f"StudyServer(url={self.url!r}, running={self._httpd is not None})"


class StudyHTTPServer(ThreadingHTTPServer):
    """A thread per connection, at most ``max_connections`` of them; each connection's socket has a timeout."""

    daemon_threads = True
    block_on_close = False  # keep-alive connections from browsers must not hold up shutdown()
    # The kernel completes this many connections before they are accepted (socketserver's default is 5): with
    # more waiting, clients sit in SYN retries instead of getting an answer (a 503 when every worker is busy).
    request_queue_size = 128

    def __init__(
        self, address, handler, *, study: HumanStudy, page: bytes, request_timeout: float, max_connections: int
    ):
        self.study = study
        self.page = page
        self.request_timeout = request_timeout
        self.max_connections = max_connections
        self._slots = threading.BoundedSemaphore(max_connections)
        self._active = 0
        self._count_lock = threading.Lock()
        self.num_refused = 0  # connections answered 503 because every slot was taken
        super().__init__(address, handler)

    @property
    def active_connections(self) -> int:
        """Connections being served now (each holds one thread)."""
        return self._active

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            self.num_refused += 1
            body = b'{"error": "the study server is busy; retry in a moment"}'
            try:  # a fresh socket's send buffer takes this at once; never wait on the client from this thread
                request.setblocking(False)
                request.send(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
                    b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
                )
            except OSError:
                pass
            self.shutdown_request(request)
            return
        with self._count_lock:
            self._active += 1
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release()

    def _release(self) -> None:
        with self._count_lock:
            self._active -= 1
        self._slots.release()

    def handle_error(self, request, client_address) -> None:
        logger.debug("human study: error on a connection from %s", client_address, exc_info=True)


class _HTTPError(Exception):
    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status


class StudyRequestHandler(BaseHTTPRequestHandler):
    server: StudyHTTPServer
    server_version = "icreward-human-study"
    protocol_version = "HTTP/1.1"  # keep-alive and byte ranges, which <video> relies on (Safari requires ranges)

    def setup(self) -> None:
        # StreamRequestHandler.setup() puts this timeout on the socket: every read and write of this connection
        # (request line, headers, body, and the wait for the next keep-alive request) gives up after it.
        self.timeout = self.server.request_timeout
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's signature
        logger.debug("%s - %s", self.address_string(), format % args)

    # --------------------------------------------------------------------------------------------------- routing

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._dispatch(self._get)

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch(self._post)

    def _dispatch(self, route) -> None:
        try:
            route(urlsplit(self.path))
        except _HTTPError as err:
            # The request body may be unread: do not parse its leftovers as the next request on this connection.
            self.close_connection = True
            self._send_json({"error": str(err)}, err.status)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the browser dropped the connection (common when a <video> changes source)
        except TimeoutError:
            self.close_connection = True  # the client stopped reading (or sending) for request_timeout seconds

    def _get(self, url) -> None:
        study = self.server.study
        if url.path in ("/", "/index.html"):
            self._send_bytes(self.server.page, "text/html; charset=utf-8")
        elif url.path == "/api/config":
            self._send_json(study._config_payload())
        elif url.path == "/api/trials":
            rater = parse_qs(url.query).get("rater", [""])[0]
            try:
                self._send_json(study._trials_payload(rater))
            except ValueError as err:
                raise _HTTPError(HTTPStatus.BAD_REQUEST, str(err)) from err
        elif url.path.startswith("/media/"):
            media = study._media.get(url.path[len("/media/") :])
            if media is None:
                raise _HTTPError(HTTPStatus.NOT_FOUND, "no such media")
            self._send_file(*media)
        else:
            raise _HTTPError(HTTPStatus.NOT_FOUND, f"no such page: {url.path}")

    def _post(self, url) -> None:
        study = self.server.study
        body = self._read_json()
        try:
            if url.path == "/api/answer":
                trial_index = body.get("trial_index")
                record = study.record_answer(
                    body.get("rater_id"),
                    trial_index,
                    body.get("choice"),
                    comment=body.get("comment") or "",
                    response_time_s=body.get("response_time_s"),
                )
                answered = len(study.answered_pairs(record["rater_id"]))
                self._send_json({"ok": True, "num_answered": answered, "num_trials": len(study.pairs)})
            elif url.path == "/api/feedback":
                study.record_feedback(body.get("rater_id"), body.get("comment") or "")
                self._send_json({"ok": True})
            else:
                raise _HTTPError(HTTPStatus.NOT_FOUND, f"no such endpoint: {url.path}")
        except ValueError as err:
            raise _HTTPError(HTTPStatus.BAD_REQUEST, str(err)) from err
        except RuntimeError as err:
            raise _HTTPError(HTTPStatus.CONFLICT, str(err)) from err

    # -------------------------------------------------------------------------------------------------- helpers

    def _read_json(self) -> dict[str, Any]:
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            raise _HTTPError(HTTPStatus.BAD_REQUEST, "bad Content-Length") from None
        if not 0 < length <= _MAX_BODY_BYTES:
            raise _HTTPError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE if length > 0 else HTTPStatus.BAD_REQUEST, "bad body size"
            )
        try:
            data = self.rfile.read(length)
        except TimeoutError:
            raise _HTTPError(HTTPStatus.REQUEST_TIMEOUT, "the request body did not arrive in time") from None
        if len(data) < length:
            raise _HTTPError(HTTPStatus.BAD_REQUEST, "the request body is shorter than its Content-Length")
        try:
            body = json.loads(data.decode("utf-8"))
        except (ValueError, RecursionError) as err:  # bad UTF-8 or JSON, a 5000-digit integer, 30000-deep nesting
            reason = "nested too deeply" if isinstance(err, RecursionError) else "not JSON"
            if isinstance(err, ValueError) and "integer string conversion" in str(err):
                reason = "an integer with too many digits"
            raise _HTTPError(HTTPStatus.BAD_REQUEST, f"the body is {reason}") from None
        if not isinstance(body, dict):
            raise _HTTPError(HTTPStatus.BAD_REQUEST, "the body must be a JSON object")
        return body

    def _send_bytes(self, data: bytes, content_type: str, status: HTTPStatus = HTTPStatus.OK) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def _send_json(self, payload: Any, status: HTTPStatus = HTTPStatus.OK) -> None:
        self._send_bytes(json.dumps(payload).encode("utf-8"), "application/json", status)

    def _send_file(self, path: Path, content_type: str) -> None:
        try:
            size = path.stat().st_size
        except OSError:
            raise _HTTPError(HTTPStatus.NOT_FOUND, "the media file is gone") from None
        start, end, status = 0, size - 1, HTTPStatus.OK
        header = self.headers.get("Range")
        if header:
            match = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip())
            if match is not None and max(map(len, match.groups())) > _MAX_RANGE_DIGITS:
                raise _HTTPError(HTTPStatus.BAD_REQUEST, f"a Range offset has more than {_MAX_RANGE_DIGITS} digits")
            if match is None or match.groups() == ("", ""):
                self._send_unsatisfiable(size)
                return
            first, last = match.groups()
            if first == "":  # "bytes=-N": the last N bytes
                start = max(size - int(last), 0)
            else:
                start = int(first)
                end = min(int(last), size - 1) if last else size - 1
            if start > end or start >= size:
                self._send_unsatisfiable(size)
                return
            status = HTTPStatus.PARTIAL_CONTENT
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        if status == HTTPStatus.PARTIAL_CONTENT:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Cache-Control", "private, max-age=3600")
        self.end_headers()
        with path.open("rb") as f:
            f.seek(start)
            remaining = end - start + 1
            while remaining > 0:
                chunk = f.read(min(_CHUNK, remaining))
                if not chunk:
                    break
                self.wfile.write(chunk)
                remaining -= len(chunk)

    def _send_unsatisfiable(self, size: int) -> None:
        self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
        self.send_header("Content-Range", f"bytes */{size}")
        self.send_header("Content-Length", "0")
        self.end_headers()


# Public classes keep the module path they had before the split into sibling modules (reprs, pickles, docs).
for _cls in (StudyServer,):
    _cls.__module__ = "icreward.evaluation.human_study"
