"""Back-filling the stored ledger a state transfer skipped (real mode).

Why this exists: a node that catches up by state transfer installs a snapshot at a stable
checkpoint; the blocks below it were never executed here, so they are not in its database
and its `/ledger` lacks them (it says so: `missing`). This fetches them from the other
nodes' APIs, below our stable checkpoint only (those seqs are final), and trusts nothing a
single node says: a block is stored only if f+1 nodes vouch for the same batch digest at its
seq (one of them is correct) and its body hashes to that digest.

Real-mode I/O: it polls on the wall clock, never touches the replica, and writes only
blocks through `node.storage`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import Counter
from collections.abc import Callable
from typing import Any

import aiohttp
from yarl import URL

from node import messages as m
from node.crypto import Identity
from node.reads import sign_read
from node.storage import Storage

__all__ = ["Backfill"]

log = logging.getLogger("medbft.backfill")

#: Seqs asked for per request (the API's `/ledger` serves at most 1000 blocks).
PAGE = 500
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=10)


class Backfill:
    """Fills `storage`'s missing ranges at or below `stable()` from `peers` (id -> API URL)."""

    def __init__(self, storage: Storage, peers: dict[str, str], f: int,
                 stable: Callable[[], int], period_s: float = 1.0,
                 signer: Identity | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        """`signer`: the identity our reads are signed with; `ssl_context`: our client context
        on a TLS network (node.tls)."""
        self.storage = storage
        self.signer = signer
        """Whom reads of peers' `/ledger` are signed as (node/reads.py): this node."""
        self.peers = dict(sorted(peers.items()))
        self.f = f
        self.stable = stable
        self.period_s = period_s
        self.filled = 0
        self.refused = 0
        self._turn = 0
        self.ssl_context = ssl_context

    async def run(self) -> None:
        """Until cancelled: every period, fill what is missing (a failed round retries)."""
        connector = aiohttp.TCPConnector(ssl=self.ssl_context or True)
        async with aiohttp.ClientSession(connector=connector, timeout=HTTP_TIMEOUT) as session:
            while True:
                try:
                    await self.round(session)
                except (aiohttp.ClientError, TimeoutError, ValueError, KeyError) as exc:
                    log.info("back-fill round failed: %r", exc)
                await asyncio.sleep(self.period_s)

    async def round(self, session: aiohttp.ClientSession) -> int:
        """One pass over the missing ranges; returns the blocks stored."""
        stored = 0
        for start, end in self.storage.missing(self.stable()):
            while start <= end:
                top = min(end, start + PAGE - 1)
                got = await self._page(session, start, top)
                stored += got
                if not got:
                    break  # nobody vouches yet: try again next round
                start = top + 1
        return stored

    async def _page(self, session: aiohttp.ClientSession, start: int, end: int) -> int:
        limit = end - start + 1
        rows = await asyncio.gather(*(
            _get(session, f"{url}/ledger?digests=1&start={start}&limit={limit}", self.signer)
            for url in self.peers.values()))
        votes: dict[int, Counter[str]] = {}
        for row in rows:
            for seq, digest in (row or {}).get("digests", []):
                if start <= seq <= end:
                    votes.setdefault(int(seq), Counter())[str(digest)] += 1
        agreed = {seq: d for seq, c in votes.items() for d, k in c.items() if k > self.f}
        if not agreed:
            return 0
        urls = list(self.peers.values())
        for i in range(len(urls)):
            url = urls[(self._turn + i) % len(urls)]
            body = await _get(session, f"{url}/ledger?raw=1&start={start}&limit={limit}",
                              self.signer)
            stored = self._store(body, agreed) if body else 0
            if stored:
                self._turn += 1
                return stored
        return 0

    def _store(self, body: dict[str, Any], agreed: dict[int, str]) -> int:
        stored = 0
        blocks = body.get("blocks", [])
        for row in blocks:
            seq, raw = int(row["seq"]), bytes.fromhex(str(row["raw"]))
            want = agreed.get(seq)
            if want is None:
                continue
            try:
                cb = m.decode(raw)
            except m.DecodeError:
                cb = None
            if type(cb) is not m.CommittedBatch or cb.seq != seq \
                    or cb.batch.digest().hex() != want:
                self.refused += 1
                continue
            self.storage.stage("block", raw)
            stored += 1
        if stored:
            self.storage.commit()
            self.filled += stored
            log.info("back-filled %d blocks", stored)
        return stored


async def _get(session: aiohttp.ClientSession, url: str,
               signer: Identity | None) -> dict[str, Any] | None:
    target = URL(url, encoded=True)
    headers = {} if signer is None else sign_read(signer, "GET", target.raw_path_qs)
    try:
        async with session.get(target, headers=headers) as resp:
            if resp.status != 200:
                return None
            body = await resp.json()
            return body if isinstance(body, dict) else None
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
