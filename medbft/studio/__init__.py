"""`medbft studio`: the deterministic simulator in a browser, paused, stepped, broken, replayed.

Why this exists: teaching PBFT needs something to click, as RaftScope is for Raft. The page is
the replay page (medbft/views/replay.py) fed live: this package holds the session behind it
(`session.Session`: one scenario, the what-if actions added to it, one stepwise run) and the
small aiohttp server that exposes it to the page (`server`).
"""
