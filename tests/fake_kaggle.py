"""A recording stand-in for Kaggle's API, for running the real kaggle client in tests.

kagglesdk POSTs JSON to ``{base}/api/v1/{service}/{Method}`` when ``KAGGLE_API_ENVIRONMENT=LOCALHOST``
(base ``http://localhost``); blob uploads PUT to whatever URL StartBlobUpload returned, here this
server again. The server binds 127.0.0.1 only, answers a bounded number of requests with socket
timeouts, and shuts itself down after ``lifetime`` seconds.

Pointing the client at this server's port means editing kagglesdk's private endpoint table;
that happens only in ``AIM_CLIENT``, the code a test subprocess runs before anything imports
the ``kaggle`` package.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

OWNER = "guie-tester"
SUBMISSION_REF = 31415926

# Run first in a test subprocess: aim kagglesdk's LOCAL endpoint at the fake server (argv[1]).
AIM_CLIENT = """\
import sys
import kagglesdk.kaggle_env as kaggle_env
kaggle_env._env_to_endpoint[kaggle_env.KaggleEnv.LOCAL] = sys.argv[1]
"""
# ... then run guie-package (or guie-submit) with the remaining arguments.
CLIENT_BOOT = AIM_CLIENT + """\
sys.argv = ["guie-package", *sys.argv[2:]]
from guie.cli import package_main
package_main()
"""
SUBMIT_BOOT = AIM_CLIENT + """\
sys.argv = ["guie-submit", *sys.argv[2:]]
from guie.cli import submit_main
submit_main()
"""


class FakeKaggle:
    """Answers the calls guie-package --upload and guie-submit make and records every request.

    Kernel runs answer ``kernel_statuses`` one per GetKernelSessionStatus call (the last repeats), with
    ``failure_message`` and ``kernel_log`` (ListKernelSessionOutput) for a failed run. CreateCodeSubmission
    answers ``submit_response`` (default: submission ``submission_ref``). ListSubmissions lists an older
    submission and, once ours exists (or ``listed`` is set, as for a submission made before this server
    started), ours with the fields of ``submission_states``, one per call (the last repeats).
    """

    def __init__(self, *, dataset_exists: bool = False, statuses: tuple[str, ...] = ("BLOBS_RECEIVED", "READY"),
                 create_response: dict[str, Any] | None = None, max_requests: int = 100, lifetime: float = 120.0,
                 kernel_statuses: tuple[str, ...] = ("QUEUED", "RUNNING", "COMPLETE"), failure_message: str = "",
                 kernel_log: str | None = None, submit_response: dict[str, Any] | None = None,
                 submission_states: tuple[dict[str, Any], ...] = (
                     {"status": "PENDING"}, {"status": "COMPLETE", "publicScore": "0.6120", "privateScore": "0.5980"}),
                 listed: bool = False, submission_ref: int = SUBMISSION_REF):
        self.dataset_exists = dataset_exists
        self.statuses = list(statuses)
        self.create_response = create_response
        self.kernel_statuses = list(kernel_statuses)
        self.failure_message = failure_message
        self.kernel_log = kernel_log
        self.submit_response = submit_response
        self.submission_states = list(submission_states)
        self._submitted = listed
        self.submission_ref = submission_ref
        self._kernel_polls = 0
        self._submission_polls = 0
        self.max_requests = max_requests
        self.requests: list[dict[str, Any]] = []
        self.uploads: dict[str, bytes] = {}
        self.blob_names: dict[str, str] = {}
        self._uploaded = False
        self._polls = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._watchdog = threading.Timer(lifetime, self.stop)
        self._watchdog.daemon = True
        self._stopped = False

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeKaggle:
        self._thread.start()
        self._watchdog.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._watchdog.cancel()
        self._server.shutdown()
        self._server.server_close()

    def calls(self, method: str | None = None) -> list[dict[str, Any]]:
        """Recorded RPCs (POSTs), optionally only those of one method, e.g. 'CreateDataset'."""
        rpcs = [r for r in self.requests if r["verb"] == "POST"]
        return [r for r in rpcs if method is None or r["method"] == method]

    def methods(self) -> list[str]:
        return [r["method"] if r["verb"] == "POST" else "PUT" for r in self.requests]

    # -- request handling -------------------------------------------------------------------------
    def _answer(self, verb: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        parts = path.strip("/").split("/")
        method = parts[-1] if len(parts) == 4 and parts[:2] == ["api", "v1"] else None
        record: dict[str, Any] = {"verb": verb, "path": path, "method": method, "headers": headers}
        with self._lock:
            self.requests.append(record)
            if len(self.requests) > self.max_requests:
                threading.Thread(target=self.stop, daemon=True).start()
                return 503, {"code": 503, "message": "fake Kaggle: request limit reached"}
            if verb == "PUT":
                if not path.startswith("/upload/"):
                    return 404, {"code": 404, "message": "unknown upload"}
                token = "blob-token-" + path.rsplit("/", 1)[1]
                self.uploads[token] = body
                record["token"] = token
                return 200, {}
            payload = json.loads(body or b"{}")
            record["json"] = payload
            if method == "IntrospectToken":
                return 200, {"active": True, "username": OWNER}
            if method == "GetDatasetStatus":
                if not self._uploaded:
                    return (200, {"status": "READY"}) if self.dataset_exists else \
                        (404, {"code": 404, "message": "Dataset not found"})
                status = self.statuses[min(self._polls, len(self.statuses) - 1)]
                self._polls += 1
                return 200, {"status": status}
            if method == "StartBlobUpload":
                n = len(self.blob_names)
                token = f"blob-token-{n}"
                self.blob_names[token] = payload.get("name")
                return 200, {"token": token, "createUrl": f"{self.url}/upload/{n}"}
            if method in ("CreateDataset", "CreateDatasetVersion"):
                self._uploaded = True
                ref = f"{payload.get('ownerSlug')}/{payload.get('slug') or payload.get('datasetSlug')}"
                return 200, self.create_response or {"ref": f"/{ref}", "status": "ok",
                                                     "url": f"https://www.kaggle.com/datasets/{ref}"}
            if method == "SaveKernel":
                return 200, {"ref": f"/code/{payload.get('slug')}", "versionNumber": 1,
                             "url": f"https://www.kaggle.com/code/{payload.get('slug')}"}
            if method == "GetKernelSessionStatus":
                status = self.kernel_statuses[min(self._kernel_polls, len(self.kernel_statuses) - 1)]
                self._kernel_polls += 1
                return 200, {"status": status, **({"failureMessage": self.failure_message}
                                                  if status == "ERROR" and self.failure_message else {})}
            if method == "ListKernelSessionOutput":
                return 200, {"files": [], **({"log": self.kernel_log} if self.kernel_log is not None else {})}
            if method == "CreateCodeSubmission":
                self._submitted = True
                return 200, self.submit_response or {"message": "Your submission was successfully saved",
                                                     "ref": self.submission_ref}
            if method == "ListSubmissions":
                older = {"ref": SUBMISSION_REF - 7, "date": "2026-11-01T10:00:00.000Z", "status": "COMPLETE",
                         "publicScore": "0.4000", "privateScore": "0.3900", "fileName": "submission.zip"}
                if not self._submitted:
                    return 200, {"submissions": [older]}
                state = self.submission_states[min(self._submission_polls, len(self.submission_states) - 1)]
                self._submission_polls += 1
                ours = {"ref": self.submission_ref, "date": "2026-11-30T12:00:00.000Z", "fileName": "submission.zip",
                        **state}
                return 200, {"submissions": [ours, older]}
            return 404, {"code": 404, "message": f"fake Kaggle does not know {path}"}

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 10  # seconds per socket operation

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().strip().split(b";")[0], 16)
                        if size == 0:
                            self.rfile.readline()
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _serve(self, verb: str) -> None:
                code, answer = fake._answer(verb, self.path, dict(self.headers.items()), self._body())
                data = json.dumps(answer).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802 - http.server naming
                self._serve("POST")

            def do_PUT(self) -> None:  # noqa: N802
                self._serve("PUT")

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


def client_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a test subprocess: a private HOME, no real credentials, no proxies."""
    drop = ("KAGGLE_", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    tmp = home / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    env.update({"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), "TMPDIR": str(tmp),
                "KAGGLE_API_ENVIRONMENT": "LOCALHOST", "NO_PROXY": "127.0.0.1,localhost",
                "no_proxy": "127.0.0.1,localhost"})
    env.update(extra)
    return env


def run_package(server: FakeKaggle, args: list[str], env: dict[str, str], timeout: float = 120.0,
                ) -> subprocess.CompletedProcess:
    """``guie-package ARGS`` in a fresh interpreter whose kaggle client talks to ``server``."""
    return subprocess.run([sys.executable, "-c", CLIENT_BOOT, server.url, *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def run_client(server: FakeKaggle, script: str, args: list[str], env: dict[str, str], timeout: float = 120.0,
               ) -> subprocess.CompletedProcess:
    """Python ``script`` (its arguments in ``sys.argv[2:]``) in a fresh interpreter whose kaggle client
    talks to ``server``."""
    return subprocess.run([sys.executable, "-c", AIM_CLIENT + script, server.url, *args], capture_output=True,
                          text=True, env=env, timeout=timeout)


def run_submit(server: FakeKaggle, args: list[str], env: dict[str, str], timeout: float = 120.0,
               ) -> subprocess.CompletedProcess:
    """``guie-submit ARGS`` in a fresh interpreter whose kaggle client talks to ``server``."""
    return subprocess.run([sys.executable, "-c", SUBMIT_BOOT, server.url, *args], capture_output=True, text=True,
                          env=env, timeout=timeout)
