"""The counters a server keeps and ``/healthz`` reports."""

from __future__ import annotations

from dataclasses import dataclass, field

from ._wire import ServerError

__all__ = ["ServerStats"]


@dataclass(slots=True)
class ServerStats:
    """Counters since the app was built (reported by ``/healthz`` as ``<name>_total``).

    Attributes:
        requests: generation requests received (the completions and ``/v1/ml/generate``).
        completed: generation requests answered in full.
        errors: error replies of status 500 and above, plus streams that failed after they
            started.
        client_errors: error replies and error events of a 4xx status (bad requests, refused
            hosts, 429s, ...), on every route.
        server_errors: error replies and error events of a 5xx status.
        stream_errors: streams that failed after they started (sent as an SSE error event).
        rejected_busy: requests refused with 429: the line was full, or their wait in it ran
            out.
        queued: requests that waited in line for a place before they were served.
        queue_timeouts: requests refused because they waited in line past the queue timeout.
        client_disconnects: requests whose client went away before the reply was complete
            (while waiting in line included).
        timeouts: requests that ran past the server's timeout.
        stopped_at_shutdown: requests still running when the shutdown grace period ended.
        by_status: error replies by HTTP status.
    """

    requests: int = 0
    completed: int = 0
    errors: int = 0
    client_errors: int = 0
    server_errors: int = 0
    stream_errors: int = 0
    rejected_busy: int = 0
    queued: int = 0
    queue_timeouts: int = 0
    client_disconnects: int = 0
    timeouts: int = 0
    stopped_at_shutdown: int = 0
    by_status: dict[str, int] = field(default_factory=dict)

    def count_error(self, error: ServerError, *, in_stream: bool = False) -> None:
        """Count one error reply (or one error event when ``in_stream``)."""
        if in_stream:
            self.stream_errors += 1
        else:
            key = str(error.status)
            self.by_status[key] = self.by_status.get(key, 0) + 1
        if error.status >= 500:
            self.server_errors += 1
        else:
            self.client_errors += 1
        if error.status >= 500 or in_stream:
            self.errors += 1
        if error.status == 429:
            self.rejected_busy += 1
        if error.code == "timeout":
            self.timeouts += 1
        if error.code == "queue_timeout":
            self.queue_timeouts += 1
