"""A local fake of the GCE metadata server and the EC2 instance metadata service (IMDSv2).

Serves what the trainer's preemption watcher and the VM startup scripts read:

- GCE: ``/computeMetadata/v1/instance/{preempted,maintenance-event,id,hostname,attributes/K}``,
  only with the header ``Metadata-Flavor: Google`` (403 otherwise, as the real one).
- EC2: ``PUT /latest/api/token`` (needs ``X-aws-ec2-metadata-token-ttl-seconds``), then
  ``GET /latest/meta-data/...`` with ``X-aws-ec2-metadata-token`` (401 without it, or with
  one :meth:`expire_tokens` has expired); ``spot/instance-action`` is 404 until
  :meth:`interrupt_spot`.

    with FakeMetadataServer() as server:
        os.environ["GCE_METADATA_HOST_URL"] = server.url
        server.preempt()
"""

from __future__ import annotations

import http.server
import json
import threading

GCE_PREFIX = "/computeMetadata/v1/instance/"
EC2_PREFIX = "/latest/meta-data/"
EC2_TOKEN = "fake-imds-session-token"


class FakeMetadataServer:
    def __init__(self, *, attributes: dict[str, str] | None = None, instance_id: str = "i-0fake"):
        self.attributes = dict(attributes or {})
        self.instance_id = instance_id
        self.preempted = False
        self.maintenance_event = "NONE"
        self.spot_action: dict | None = None
        self._token_generation = 0
        self.requests: list[tuple[str, str]] = []  # (method, path), in order
        self._lock = threading.Lock()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeMetadataServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    # ---- what tests flip ----------------------------------------------------------------

    def preempt(self) -> None:
        """GCE: instance/preempted turns TRUE (a spot VM is being reclaimed)."""
        with self._lock:
            self.preempted = True

    def schedule_maintenance(self, event: str = "TERMINATE_ON_HOST_MAINTENANCE") -> None:
        with self._lock:
            self.maintenance_event = event

    def interrupt_spot(self, action: str = "terminate") -> None:
        """EC2: spot/instance-action appears (the two-minute notice)."""
        with self._lock:
            self.spot_action = {"action": action, "time": "2030-01-01T00:02:00Z"}

    def expire_tokens(self) -> None:
        """EC2: every session token issued so far stops working (401), as when its TTL ends."""
        with self._lock:
            self._token_generation += 1

    # ---- serving ------------------------------------------------------------------------

    def _respond(self, method: str, path: str, headers) -> tuple[int, str]:
        with self._lock:
            self.requests.append((method, path))
            if path.startswith(GCE_PREFIX):
                if method != "GET":
                    return 405, ""
                if headers.get("Metadata-Flavor") != "Google":
                    return 403, "Missing Metadata-Flavor:Google header."
                return self._gce(path[len(GCE_PREFIX) :])
            if path == "/latest/api/token":
                if method != "PUT" or not headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
                    return 400, ""
                return 200, f"{EC2_TOKEN}-{self._token_generation}"
            if path.startswith(EC2_PREFIX):
                if headers.get("X-aws-ec2-metadata-token") != (
                    f"{EC2_TOKEN}-{self._token_generation}"
                ):
                    return 401, ""
                return self._ec2(path[len(EC2_PREFIX) :])
            return 404, ""

    def _gce(self, key: str) -> tuple[int, str]:
        if key == "preempted":
            return 200, "TRUE" if self.preempted else "FALSE"
        if key == "maintenance-event":
            return 200, self.maintenance_event
        if key == "id":
            return 200, "1234567890"
        if key == "hostname":
            return 200, "fake.c.project.internal"
        if key.startswith("attributes/") and key[len("attributes/") :] in self.attributes:
            return 200, self.attributes[key[len("attributes/") :]]
        return 404, ""

    def _ec2(self, key: str) -> tuple[int, str]:
        if key == "instance-id":
            return 200, self.instance_id
        if key == "spot/instance-action" and self.spot_action:
            return 200, json.dumps(self.spot_action)
        return 404, ""

    def _handler(self):
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _serve(self):
                status, body = server._respond(self.command, self.path, self.headers)
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                if self.path.startswith(GCE_PREFIX):
                    self.send_header("Metadata-Flavor", "Google")
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = _serve

            def log_message(self, *args):  # quiet: tests read .requests instead
                pass

        return Handler
