"""Resource limits of a node's HTTP listener (API and WebSocket transport), and the one place
every refusal is counted and logged.

Why this exists: the API and `/ws` face whoever can reach the port. Without limits a slow
client holds a connection for good, a deeply nested JSON body crashes the parser with a
RecursionError (a 500 and a traceback), an oversize header logs a traceback per request,
and nothing counts what was refused. The limits here are cheap checks made before any
expensive work; each refusal is counted by reason (`/metrics`:
`medbft_refused_total{reason=...}`) and logged as one line that carries no payload.

- `Limits`: the knobs and their defaults (`medbft node --header-timeout ...`; see
  docs/real-network.md#limits).
- `json_depth_ok`: bounds JSON nesting before `json.loads` runs (a scan of the brackets
  outside strings).
- `Refusals`: counts and logs refusals; at most `log_per_s` lines a second, the rest are
  summarised in one line (a flood of refusals must not become a flood of log lines).
- `TokenBuckets`: per-client rate limit.
- `ConnectionCap`: wraps the aiohttp server's protocol factory; beyond the cap a new
  connection gets a 503 and is closed.
- `ServerLog`: the logger handed to aiohttp's request handler: an HTTP parse error
  (oversize header, bad request line) becomes a counted one-line refusal, not a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import sys
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from aiohttp import http_exceptions, web

__all__ = ["ConnectionCap", "Limits", "Refusals", "ServerLog", "TokenBuckets", "json_depth_ok"]

log = logging.getLogger("medbft.limits")


@dataclass(frozen=True)
class Limits:
    """What a node's HTTP listener tolerates. The defaults suit a permissioned network:
    generous for honest parties, bounded for everyone."""

    header_timeout_s: float = 10.0
    """A connection must deliver a request's complete headers within this many seconds of
    opening (or of the previous response, on a kept-alive connection); an idle connection is
    closed after as long."""
    body_timeout_s: float = 10.0
    """A request body must arrive completely within this many seconds (408 otherwise)."""
    max_connections: int = 1000
    """Open HTTP/WebSocket connections at most; beyond it a new one gets 503 and is closed."""
    rate_per_s: float = 100.0
    """`POST /tx` requests per second per client (token bucket, by the authenticated client
    id); 0 turns the rate limit off."""
    rate_burst: int = 200
    """Bucket size: requests a client may send at once after being quiet."""
    max_json_depth: int = 32
    """Deepest nesting of arrays and objects accepted in any JSON body or hello."""
    max_hello_bytes: int = 4096
    """Largest WebSocket hello accepted."""
    log_per_s: int = 20
    """Refusal log lines per second; refusals beyond it are only counted, then summarised."""

    def __post_init__(self) -> None:
        for name in ("header_timeout_s", "body_timeout_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds; got {value}")
        if self.max_connections < 1:
            raise ValueError(f"max_connections must be at least 1; got {self.max_connections}")
        if not (math.isfinite(self.rate_per_s) and self.rate_per_s >= 0):
            raise ValueError(f"rate_per_s must be 0 (off) or positive; got {self.rate_per_s}")
        if self.rate_burst < 1:
            raise ValueError(f"rate_burst must be at least 1; got {self.rate_burst}")


# -- JSON nesting --------------------------------------------------------------------------------

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_BRACKET = re.compile(rb"[\[\]{}]")


def json_depth_ok(data: bytes | str, limit: int) -> bool:
    """False if `data`, read as JSON, nests arrays/objects deeper than `limit`. Brackets
    inside strings do not count; the scan tokenises strings exactly as the JSON parser does
    up to its first error, so it never undercounts what `json.loads` would recurse into.
    Linear time, no recursion."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return True
    depth = 0
    for bracket in _BRACKET.findall(_STRING.sub(b"", raw)):
        if bracket in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return False
        else:
            depth -= 1
    return True


# -- refusals ------------------------------------------------------------------------------------


class Refusals:
    """Counts refusals by reason and logs each as one line (no payload), at most
    `lines_per_s` lines a second; the lines skipped are reported in one summary line."""

    def __init__(self, logger: logging.Logger | None = None, lines_per_s: int = 20,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.counts: dict[str, int] = {}
        self.log = logger or log
        self.lines_per_s = lines_per_s
        self.clock = clock
        self._window = -1
        self._lines = 0
        self._skipped = 0

    def refuse(self, reason: str, detail: str = "") -> None:
        """Count a refusal; `detail` (who, what route) goes in the log line and must not
        carry request content."""
        self.counts[reason] = self.counts.get(reason, 0) + 1
        window = int(self.clock())
        if window != self._window:
            if self._skipped:
                self.log.warning("refused %d more (not logged; see /metrics refused_total)",
                                 self._skipped)
            self._window, self._lines, self._skipped = window, 0, 0
        if self._lines >= self.lines_per_s:
            self._skipped += 1
            return
        self._lines += 1
        self.log.warning("refused %s%s", reason, f": {detail}" if detail else "")


def printable(text: str, limit: int = 80) -> str:
    """`text` cut to `limit` characters with control characters escaped (log-safe)."""
    short = text[:limit].encode("unicode_escape").decode("ascii")
    return short + ("..." if len(text) > limit else "")


# -- rate limit ----------------------------------------------------------------------------------


class TokenBuckets:
    """One token bucket per key: `rate` tokens a second up to `burst`. Keys are authenticated
    client ids, so the table is bounded by the membership."""

    def __init__(self, rate: float, burst: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str) -> float:
        """0.0 if `key` may go ahead (a token is spent), else the seconds until it may."""
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        tokens, then = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate


# -- connection cap ------------------------------------------------------------------------------

_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
         b"Content-Length: 33\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
         b'{"error": "too many connections"}')


class _Busy(asyncio.Protocol):
    """A connection over the cap: answered 503 and closed at once."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(_BUSY)
        transport.close()


class ConnectionCap:
    """Protocol factory for `loop.create_server`: `server()` (aiohttp's low-level
    `web.Server`, e.g. `AppRunner.server`) while fewer than `limit` connections are open,
    else a 503-and-close."""

    def __init__(self, server: web.Server, limit: int, refusals: Refusals) -> None:
        self.server = server
        self.limit = limit
        self.refusals = refusals

    def __call__(self) -> asyncio.BaseProtocol:
        if len(self.server.connections) >= self.limit:
            self.refusals.refuse("connection-cap", f"{self.limit} connections open")
            return _Busy()
        return self.server()


# -- aiohttp's own errors ------------------------------------------------------------------------


def http_error_reason(exc: BaseException) -> str:
    """The refusal reason of an HTTP parse error aiohttp answers itself."""
    if isinstance(exc, http_exceptions.LineTooLong):
        return "header-too-large"
    if isinstance(exc, http_exceptions.BadHttpMethod):
        return "bad-method"
    if isinstance(exc, http_exceptions.BadStatusLine):
        return "bad-request-line"
    if isinstance(exc, http_exceptions.InvalidHeader):
        return "bad-header"
    return "bad-http"


class ServerLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """The `logger` of aiohttp's request handler (`web.AppRunner(..., logger=...)`). aiohttp
    answers a request it cannot parse (oversize header, garbage request line) with 400 by
    itself and logs the exception with its traceback; here such an error is a counted
    refusal and one line instead. Everything else passes through unchanged."""

    def __init__(self, logger: logging.Logger, refusals: Refusals) -> None:
        super().__init__(logger, {})
        self.refusals = refusals

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        exc_info = kwargs.get("exc_info")
        exc = exc_info if isinstance(exc_info, BaseException) else (
            sys.exc_info()[1] if exc_info is True else None)
        if isinstance(exc, http_exceptions.HttpProcessingError):
            remote = args[0] if args and isinstance(args[0], str) else "?"
            self.refusals.refuse(http_error_reason(exc), f"{exc.code} to {printable(remote)}")
            return
        super().log(level, msg, *args, **kwargs)

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        return msg, kwargs
