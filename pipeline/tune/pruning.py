"""The driver's pruning service: where rank 0 of every trial reports its epochs.

Only the driver opens the study. Rank 0 of a trial runs in a Spark task on some executor,
which cannot open the driver's files (a SQLite study is a local file), so it POSTs each
epoch's validation value to this small HTTP server in the driver process, which records it
on the trial (`trial.report`) and answers whether the study's pruner stops the trial. It
listens where Horovod's own driver service does (`spark.driver.host`): executors that can
start Horovod ranks can reach it. Each trial gets a random token, so a stray request cannot
report for, or prune, another trial.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from pipeline.train.trial import PruneLink

_logger = logging.getLogger(__name__)


class PruningService:
    def __init__(self, host: str) -> None:
        self._trials: dict[int, tuple[str, Any]] = {}  # number -> (token, optuna Trial)
        self._lock = threading.Lock()  # the study storage is used from one thread at a time
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                try:
                    length = int(self.headers.get("Content-Length", "0"))
                    reply = service.handle(json.loads(self.rfile.read(length)))
                    status = 200
                except Exception as exc:
                    reply, status = {"error": f"{type(exc).__name__}: {exc}"}, 400
                body = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                _logger.debug("pruning service: " + format, *args)

        self._server = ThreadingHTTPServer((host, 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://{host}:{self._server.server_address[1]}/report"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="pruning-service", daemon=True
        )
        self._thread.start()

    def __enter__(self) -> PruningService:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def register(self, trial: Any) -> PruneLink:
        """A link for rank 0 of `trial` (an optuna Trial)."""
        token = secrets.token_hex(16)
        with self._lock:
            self._trials[trial.number] = (token, trial)
        return PruneLink(url=self.url, trial=trial.number, token=token)

    def forget(self, number: int) -> None:
        with self._lock:
            self._trials.pop(number, None)

    def handle(self, message: dict[str, Any]) -> dict[str, Any]:
        number = int(message["trial"])
        with self._lock:
            token, trial = self._trials.get(number, ("", None))
            if trial is None or not secrets.compare_digest(token, str(message["token"])):
                raise PermissionError(f"trial {number} is not running in this study")
            epoch, value = int(message["epoch"]), float(message["value"])
            trial.report(value, epoch)
            prune = bool(trial.should_prune())
        if prune:
            _logger.info("trial %d: pruned after epoch %d (value %.4g)", number, epoch + 1, value)
        return {"prune": prune}

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
