"""An ``onnxcam serve`` process spoken to over loopback HTTP, with the standard library only:
start it on a free port, post images, read its memory, stop it. Used by benchmarks/serve.py
and the service's tests."""
from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Optional, Sequence
from urllib.parse import urlencode

HOST = "127.0.0.1"
_LISTENING = re.compile(r"Uvicorn running on http://[^:]+:(\d+)")


class Response:
    """A status, headers (lower-case names) and body; ``json()`` decodes the body."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)


class Client:
    """One keep-alive HTTP connection to the server on ``port`` (reopened after a close)."""

    def __init__(self, port: int, timeout: float = 120.0):
        self.port, self.timeout = port, timeout
        self._connection: Optional[http.client.HTTPConnection] = None

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: Optional[dict[str, str]] = None) -> Response:
        """One request; on a kept-alive connection the server closed meanwhile (uvicorn closes
        idle ones after 5 s), once more on a new connection."""
        reused = self._connection is not None
        try:
            return self._send(method, path, body, headers)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            if not reused:
                raise
        return self._send(method, path, body, headers)

    def _send(self, method: str, path: str, body: bytes | None,
              headers: Optional[dict[str, str]]) -> Response:
        if self._connection is None:
            self._connection = http.client.HTTPConnection(HOST, self.port, timeout=self.timeout)
        try:
            self._connection.request(method, path, body=body, headers=headers or {})
            answer = self._connection.getresponse()
            response = Response(answer.status, {k.lower(): v for k, v in answer.getheaders()},
                                answer.read())
        except (ConnectionError, http.client.HTTPException):
            self.close()
            raise
        if response.headers.get("connection", "").lower() == "close":
            self.close()
        return response

    def explain(self, image: bytes, form: bool = False, **params) -> Response:
        """``POST /v1/explain``: the image as the raw body with ``params`` in the query string,
        or (``form``) as a multipart upload with ``params`` as form fields."""
        if form:
            body, content_type = multipart(image, params)
            return self.request("POST", "/v1/explain", body, {"Content-Type": content_type})
        query = urlencode(params, doseq=True)
        return self.request("POST", "/v1/explain" + (f"?{query}" if query else ""), image,
                            {"Content-Type": "application/octet-stream"})

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def multipart(image: bytes, fields: dict, filename: str = "image.png") -> tuple[bytes, str]:
    """A multipart/form-data body holding ``fields`` and the file ``image``."""
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
             for name, values in fields.items() for value in (values if isinstance(values, list) else [values])]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{filename}"\r\n'
                 "Content-Type: application/octet-stream\r\n\r\n".encode() + image + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


class Server:
    """``onnxcam serve ARGS`` in a subprocess on a free loopback port; a context manager that
    waits until it answers ``/healthz`` and stops it (SIGTERM) on exit. Its log goes to ``log``."""

    def __init__(self, args: Sequence[str], log: Path, cwd: Optional[Path] = None,
                 env: Optional[dict[str, str]] = None, start_timeout: float = 120.0):
        self.args, self.log, self.cwd = [str(a) for a in args], Path(log), cwd
        self.env = {**os.environ, **(env or {})}
        self.start_timeout = start_timeout
        self.process: Optional[subprocess.Popen] = None
        self.port = 0

    def __enter__(self) -> "Server":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            self.stop()

    def start(self) -> None:
        command = [sys.executable, "-m", "onnxcam", "serve", *self.args, "--host", HOST, "--port", "0"]
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                            cwd=self.cwd, env=self.env)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            found = _LISTENING.search(self.log.read_text(errors="replace"))
            if found:  # the port is bound; ready once /healthz answers (workers start later)
                self.port = int(found.group(1))
                probe = self.client()
                try:
                    if probe.request("GET", "/healthz").status == 200:
                        return
                except ConnectionError:
                    pass
                finally:
                    probe.close()
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"onnxcam serve did not start: {self.log.read_text(errors='replace')[-2000:]}")

    def client(self) -> Client:
        return Client(self.port)

    def rss_mb(self) -> float:
        """The server process's resident memory now."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, then wait; returns the exit status (killed after ``timeout``)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()
