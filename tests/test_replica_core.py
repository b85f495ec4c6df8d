"""Layer 1: the replica core driven directly, asserting on the effects it returns.

Test names cite the section of Castro & Liskov, OSDI '99 (or TOCS 2002) whose rule they pin.
"""

from __future__ import annotations

import pytest
from test_crypto import CountingBase

from node import messages as m
from node.config import Config
from node.crypto import Costs, Keyring, VerifyCache
from node.envelope import open_envelope
from node.events import Multicast, Receive, Send, SetTimer, Start, Timeout, Trace, sends
from node.pbft import NULL_DIGEST, Replica, decide_new_view
from node.statemachine import KeyValueStore
from sim.memnet import make_membership


class Harness:
    """One replica under test plus the keys to speak as anyone else."""

    def __init__(self, n: int = 4, me: str = "r1", config: Config | None = None) -> None:
        self.membership, self.idents = make_membership(n)
        pubs = self.membership.public_keys()
        self.keys = {p: Keyring(i, pubs, Costs(), VerifyCache()) for p, i in self.idents.items()}
        self.replica = Replica(self.membership, me, self.keys[me], KeyValueStore(),
                               config or Config())
        self.me = me
        self.now = 0
        self.effects = self.replica.step(Start(), 0)

    def request(self, ts: int = 1, op: bytes = b"put a 1", client: str = "client-1") -> m.Request:
        unsigned = m.Request(op, ts, client, 0, b"")
        return m.replace(unsigned, signature=self.keys[client].sign(m.encode(unsigned)))

    def envelope(self, sender: str, msg: m.Message, mac: bytes | None = None) -> bytes:
        payload = m.encode(msg)
        if mac is None:
            mac = b"" if sender.startswith("client") else self.keys[sender].mac(
                self.me, sender.encode() + b"\x00" + payload)
        return m.encode(m.Envelope(sender, payload, mac))

    def deliver(self, sender: str, msg: m.Message, **kw: bytes) -> list:  # type: ignore[type-arg]
        self.effects = self.replica.step(Receive(self.envelope(sender, msg, **kw)), self.now)
        return self.effects

    def sends(self, kind: str | None = None) -> list[tuple[str, m.Message]]:
        out = []
        for e in sends(self.effects):
            if isinstance(e, Send) and (kind is None or e.kind == kind):
                env = m.decode(e.data)
                out.append((e.to, m.decode(env.payload)))
        return out

    def signed(self, msg: m.Message, signer: str) -> m.Message:
        unsigned = m.replace(msg, signature=b"")  # type: ignore[type-var]
        data = unsigned.unsigned() if hasattr(unsigned, "unsigned") else m.encode(unsigned)
        return m.replace(msg, signature=self.keys[signer].sign(data))  # type: ignore


def pre_prepare(h: Harness, seq: int = 1, view: int = 0, ts: int = 1) -> m.PrePrepare:
    batch = m.Batch(5, (h.request(ts),))
    return m.PrePrepare(view, seq, batch.digest(), batch)


# -- normal case (§4.2) ----------------------------------------------------------------------


def test_primary_multicasts_pre_prepare_on_request_4_2() -> None:
    h = Harness(me="r0")
    h.deliver("client-1", h.request())
    pps = h.sends("PRE-PREPARE")
    assert sorted(to for to, _ in pps) == ["r1", "r2", "r3"]
    pp = pps[0][1]
    assert isinstance(pp, m.PrePrepare) and (pp.view, pp.seq) == (0, 1)
    assert pp.digest == pp.batch.digest()
    assert h.sends("PREPARE") == [], "the primary sends no PREPARE"


def test_backup_accepts_pre_prepare_and_multicasts_prepare_4_2() -> None:
    h = Harness()
    pp = pre_prepare(h)
    h.deliver("r0", pp)
    prepares = h.sends("PREPARE")
    assert sorted(to for to, _ in prepares) == ["r0", "r2", "r3"]
    assert prepares[0][1] == m.Prepare(0, 1, pp.digest, 1)


def test_prepared_needs_2f_prepares_from_distinct_backups_not_the_primary_4_2() -> None:
    h = Harness()
    pp = pre_prepare(h)
    h.deliver("r0", pp)  # own PREPARE counts: 1 of 2f = 2
    h.deliver("r0", m.Prepare(0, 1, pp.digest, 0))
    assert h.sends("COMMIT") == [], "a PREPARE from the primary must not count"
    assert any(isinstance(e, Trace) and e.fields.get("reason") == "prepare from primary"
               for e in h.effects)
    h.deliver("r2", m.Prepare(0, 1, pp.digest, 2))
    commits = h.sends("COMMIT")
    assert len(commits) == 3 and commits[0][1] == m.Commit(0, 1, pp.digest, 1)


def test_prepares_with_another_digest_do_not_count_4_2() -> None:
    h = Harness()
    pp = pre_prepare(h)
    h.deliver("r0", pp)
    h.deliver("r2", m.Prepare(0, 1, b"\x01" * 32, 2))
    h.deliver("r3", m.Prepare(0, 1, b"\x02" * 32, 3))
    assert h.sends("COMMIT") == []


def test_committed_local_needs_2f_plus_1_commits_then_executes_and_replies_4_2() -> None:
    h = Harness()
    pp = pre_prepare(h)
    h.deliver("r0", pp)
    h.deliver("r2", m.Prepare(0, 1, pp.digest, 2))
    h.deliver("r0", m.Commit(0, 1, pp.digest, 0))  # own + r0 = 2 < 3
    assert h.sends("REPLY") == []
    h.deliver("r3", m.Commit(0, 1, pp.digest, 3))
    replies = h.sends("REPLY")
    assert replies == [("client-1", m.Reply(0, 1, "client-1", 0, 1, b"ok"))]
    assert h.replica.last_executed == 1


def test_out_of_order_commits_execute_in_sequence_order_4_2() -> None:
    h = Harness()
    pps = [pre_prepare(h, seq=s, ts=s) for s in (1, 2)]
    for pp in reversed(pps):
        h.deliver("r0", pp)
        h.deliver("r2", m.Prepare(0, pp.seq, pp.digest, 2))
        h.deliver("r3", m.Commit(0, pp.seq, pp.digest, 3))
        h.deliver("r2", m.Commit(0, pp.seq, pp.digest, 2))
        if pp.seq == 2:
            assert h.replica.last_executed == 0, "seq 2 must wait for seq 1"
    assert h.replica.last_executed == 2


def test_conflicting_pre_prepare_for_same_view_and_seq_is_rejected_4_2() -> None:
    h = Harness()
    h.deliver("r0", pre_prepare(h, ts=1))
    h.deliver("r0", pre_prepare(h, ts=2))
    assert h.sends("PREPARE") == []
    assert h.replica.dropped["conflicting pre-prepare"] == 1


@pytest.mark.parametrize("seq", [0, 257])
def test_pre_prepare_outside_watermarks_is_not_accepted_4_3(seq: int) -> None:
    h = Harness()
    h.deliver("r0", pre_prepare(h, seq=seq))
    assert h.sends("PREPARE") == []


def test_pre_prepare_from_a_backup_is_rejected_4_2() -> None:
    h = Harness()
    h.deliver("r2", pre_prepare(h))
    assert h.sends() == []
    assert h.replica.dropped["pre-prepare not from primary"] == 1


def test_primary_stops_at_the_high_watermark_4_3() -> None:
    cfg = Config(checkpoint_interval=2, watermark_window=4, max_in_flight=100)
    h = Harness(me="r0", config=cfg)
    for ts in range(1, 8):
        h.deliver("client-1", m.replace(h.request(ts)))
    assert h.replica.next_seq == 5, "seq must stay within h + L = 4"
    assert len(h.replica.pending) == 3


def test_batching_groups_requests_up_to_batch_size_4_2() -> None:
    cfg = Config(batch_size=3, batch_timeout_ns=1_000_000)
    h = Harness(me="r0", config=cfg)
    h.deliver("client-1", h.request(1))
    assert h.sends("PRE-PREPARE") == []
    assert any(isinstance(e, SetTimer) and e.key == "batch" for e in h.effects)
    effects = h.replica.step(Timeout("batch"), 1_000_000)
    h.effects = effects
    pps = h.sends("PRE-PREPARE")
    assert len(pps) == 3 and len(pps[0][1].batch.requests) == 1  # type: ignore[union-attr]


def test_in_flight_bound_buffers_requests_4_2() -> None:
    h = Harness(me="r0", config=Config(max_in_flight=1))
    h.deliver("client-1", h.request(1))
    h.deliver("client-1", h.request(2, client="client-1", op=b"put b 2"))
    assert h.replica.next_seq == 2 and len(h.replica.pending) == 1


# -- authentication and malformed input --------------------------------------------------------


def test_bad_mac_is_dropped_and_counted() -> None:
    h = Harness()
    h.deliver("r0", pre_prepare(h), mac=b"\x00" * 32)
    assert h.sends() == [] and h.replica.dropped["bad MAC"] == 1


def test_a_forged_message_is_never_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    """The MAC is checked over the payload bytes before any parsing: a forged NEW-VIEW full
    of tiny objects (which once cost about a second to decode per 16 MiB) costs one MAC."""
    h = Harness()
    decoded: list[bytes] = []
    real_decode = m.decode

    def watching(data: bytes) -> m.Message:
        decoded.append(data)
        return real_decode(data)

    monkeypatch.setattr(m, "decode", watching)
    forged = m.encode(m.NewView(1, (), (), 0, b"")) + b"\x00" * 1000  # would not even parse
    envelope = m.encode(m.Envelope("r0", forged, b"\x11" * 32))
    h.effects = h.replica.step(Receive(envelope), 0)
    assert decoded == [] and h.replica.dropped == {"bad MAC": 1}
    h.deliver("r0", pre_prepare(h))  # an authentic message still gets through
    assert h.sends("PREPARE")


def test_a_sealed_copy_opens_without_a_mac_computed_and_nothing_else_does() -> None:
    """Replicas sharing a VerifyCache (a simulation): the copy of a multicast sealed for a
    replica is authenticated from the record, once; its replay, another replica's copy and
    a tampered copy are checked by computing the MAC, with the outcome a real node has."""
    membership, idents = make_membership(4)
    pubs = membership.public_keys()
    cache = VerifyCache()
    keys = {p: Keyring(i, pubs, Costs(), cache) for p, i in idents.items()}
    replicas = {r: Replica(membership, r, keys[r], KeyValueStore(), Config())
                for r in ("r0", "r1", "r2")}
    for replica in replicas.values():
        replica.step(Start(), 0)
    unsigned = m.Request(b"put a 1", 1, "client-1", 0, b"")
    request = m.replace(unsigned, signature=keys["client-1"].sign(m.encode(unsigned)))
    effects = replicas["r0"].step(
        Receive(m.encode(m.Envelope("client-1", m.encode(request), b""))), 0)
    multicast = next(e for e in effects if isinstance(e, Multicast) and e.kind == "PRE-PREPARE")
    copies = dict(zip(multicast.to, multicast.data, strict=True))
    for to, copy in copies.items():  # the record says what reading the envelope says
        key, sender, payload = cache.sealed[copy]
        assert open_envelope(copy)[:2] == (sender, payload) and sender == "r0"
        assert key == keys[to]._mac_key("r0")
    counters = {}
    for r in ("r1", "r2"):
        keys[r].mac("r0", b"derive the key")
        counters[r] = keys[r]._mac_bases["r0"] = CountingBase(  # type: ignore[assignment]
            keys[r]._mac_bases["r0"])

    def deliver(to: str, data: bytes) -> list[object]:
        return list(replicas[to].step(Receive(data), 0))

    def prepares(effects: list[object]) -> bool:
        return any(isinstance(e, Multicast) and e.kind == "PREPARE" for e in effects)

    # (a counter also counts the MAC of the PREPARE a replica sends to r0)
    assert prepares(deliver("r1", copies["r1"]))  # its own copy: from the record
    assert counters["r1"].copies == 1  # the PREPARE's MAC for r0 only
    deliver("r1", copies["r1"])  # the same bytes again: computed, authentic, a duplicate
    # (two more: the check, and the PREPARE a duplicate PRE-PREPARE has r1 send r0 again)
    assert counters["r1"].copies == 3 and "bad MAC" not in replicas["r1"].dropped
    assert replicas["r1"].dropped.get("duplicate pre-prepare") == 1
    deliver("r2", copies["r1"])  # r1's copy at r2: computed under r2's key, refused
    tampered = bytearray(copies["r2"])
    tampered[20] ^= 1
    deliver("r2", bytes(tampered))  # never sealed: computed, refused
    assert counters["r2"].copies == 2 and replicas["r2"].dropped == {"bad MAC": 2}
    assert prepares(deliver("r2", copies["r2"]))  # its own copy: still from the record
    assert counters["r2"].copies == 3  # + the PREPARE's MAC for r0
    assert copies["r3"] in cache.sealed and copies["r2"] not in cache.sealed


def test_message_in_another_replicas_name_is_dropped() -> None:
    h = Harness()
    pp = pre_prepare(h)
    h.deliver("r0", pp)
    h.deliver("r2", m.Prepare(0, 1, pp.digest, 3))
    assert h.replica.dropped["replica field does not match sender"] == 1


def test_forged_request_signature_is_dropped_and_counted() -> None:
    h = Harness(me="r0")
    req = m.replace(h.request(), signature=b"\x01" * 64)
    h.deliver("client-1", req)
    assert h.sends() == [] and h.replica.dropped["bad request signature"] == 1


def test_a_request_checked_once_answers_for_the_replicas_holding_the_same_key() -> None:
    """A request object remembers the answer of its signature check with the public key it
    was checked under: a replica holding that key takes the answer (still counting one
    check), a replica holding another key for the client checks again, and a forged
    signature is remembered as forged."""
    membership, idents = make_membership(4)
    pubs = membership.public_keys()
    cache = VerifyCache()
    wrong = pubs["r0"]  # r3 holds a wrong key for client-1 (another party's)
    other = dict(pubs, **{"client-1": wrong})
    keys = {p: Keyring(i, other if p == "r3" else pubs, Costs(), cache)
            for p, i in idents.items()}
    normal = {r: Replica(membership, r, keys[r], KeyValueStore(), Config()).normal
              for r in ("r1", "r2", "r3")}
    unsigned = m.Request(b"put a 1", 1, "client-1", 0, b"")
    good = m.replace(unsigned, signature=keys["client-1"].sign(unsigned.unsigned()))
    forged = m.replace(unsigned, signature=b"\x01" * 64)
    assert good.checked_under(pubs["client-1"]) is None
    assert normal["r1"].valid_request(good) and normal["r1"].valid_request(forged) is False
    assert good.checked_under(pubs["client-1"]) is True
    assert forged.checked_under(pubs["client-1"]) is False
    assert good.checked_under(wrong) is None
    assert normal["r2"].valid_request(good) and normal["r2"].valid_request(forged) is False
    assert keys["r1"].costs.verify == keys["r2"].costs.verify == 2  # each check counted
    assert normal["r3"].valid_request(good) is False  # its key: checked again, refused
    assert good.checked_under(wrong) is False
    assert normal["r1"].valid_request(good)  # under the right key it is still good


def test_pre_prepare_carrying_forged_request_is_rejected() -> None:
    h = Harness()
    req = m.replace(h.request(), op=b"put evil 1")  # signature no longer matches
    batch = m.Batch(1, (req,))
    h.deliver("r0", m.PrePrepare(0, 1, batch.digest(), batch))
    assert h.replica.dropped["bad request signature in batch"] == 1


@pytest.mark.parametrize("data", [b"", b"\x00", b"\xff" * 10, m.encode(m.Prepare(0, 1, b"", 1))])
def test_malformed_bytes_are_dropped_and_the_replica_carries_on(data: bytes) -> None:
    h = Harness()
    effects = h.replica.step(Receive(data), 0)
    assert not [e for e in effects if isinstance(e, Send | Multicast)]
    assert sum(h.replica.dropped.values()) == 1
    h.deliver("r0", pre_prepare(h))
    assert h.sends("PREPARE"), "the replica still works afterwards"


# -- client requests and exactly-once (§4.1) ----------------------------------------------------


def test_backup_relays_client_retransmission_to_primary_and_arms_timer_4_4() -> None:
    h = Harness()
    h.deliver("client-1", h.request())
    assert [to for to, _ in h.sends("REQUEST")] == ["r0"]
    assert any(isinstance(e, SetTimer) and e.key == "view-change" for e in h.effects)


def test_executed_request_is_answered_from_the_reply_cache_4_1() -> None:
    h = Harness()
    pp = pre_prepare(h)
    for msg in (pp, m.Prepare(0, 1, pp.digest, 2)):
        h.deliver("r0" if msg is pp else "r2", msg)
    h.deliver("r0", m.Commit(0, 1, pp.digest, 0))
    h.deliver("r2", m.Commit(0, 1, pp.digest, 2))
    executed = h.replica.sm.executed  # type: ignore[attr-defined]
    h.deliver("client-1", h.request(1))
    assert h.sends("REPLY") and h.sends("REQUEST") == []
    assert h.replica.sm.executed == executed  # type: ignore[attr-defined]


# -- view change (§4.4) and the NEW-VIEW decision procedure (TOCS §4.5) ----------------------------


def test_view_change_timeout_sends_signed_view_change_4_4() -> None:
    h = Harness()
    h.deliver("client-1", h.request())
    h.effects = h.replica.step(Timeout("view-change"), 500_000_000)
    vcs = h.sends("VIEW-CHANGE")
    assert len(vcs) == 3
    vc = vcs[0][1]
    assert isinstance(vc, m.ViewChange) and vc.view == 1 and vc.replica == 1
    assert h.keys["r2"].verify("r1", vc.unsigned(), vc.signature)
    assert not h.replica.view_active
    # §4.5.2 rule 1: the timer for the NEW-VIEW starts only with 2f+1 VIEW-CHANGEs for v+1.
    assert not [e for e in h.effects if isinstance(e, SetTimer) and e.key == "view-change"]
    h.deliver("r3", _view_change(h, "r3", 1))
    assert not [e for e in h.effects if isinstance(e, SetTimer) and e.key == "view-change"]
    h.deliver("r2", _view_change(h, "r2", 1))
    # r1 is primary of view 1: with 2f+1 VIEW-CHANGEs it sends NEW-VIEW at once instead.
    assert h.sends("NEW-VIEW") and h.replica.view_active


def test_view_change_timeouts_double_4_5_2() -> None:
    h = Harness(me="r0")  # never the primary of views 1..3
    h.deliver("client-1", h.request())
    delays = []
    for view in (1, 2, 3):
        h.effects = h.replica.step(Timeout("view-change"), 0)
        assert h.replica.view == view
        for other in [r for r in ("r1", "r2", "r3") if r != f"r{view}"][:2]:
            h.deliver(other, _view_change(h, other, view))
            delays += [e.delay_ns for e in h.effects
                       if isinstance(e, SetTimer) and e.key == "view-change"]
    assert delays == [500_000_000, 1_000_000_000, 2_000_000_000]


def test_a_backup_answers_a_retransmitted_pre_prepare_with_its_votes_6_1() -> None:
    """The primary re-sends a proposal while it is stuck on it: a backup that holds it sends
    its PREPARE again, and its COMMIT once prepared, to the primary (retransmission until
    stable, §6.1). Found by the swarm (`medbft fuzz --n 4 --seed 99983`): one backup had
    executed the seq with the other backup's COMMIT, the primary had missed its COMMIT and
    the other backup had left for the next view, so the primary's re-sent PRE-PREPARE was
    dropped as a duplicate and the request never settled."""
    h = Harness(me="r1")
    pp = pre_prepare(h)
    h.deliver("r0", pp)
    h.deliver("r0", pp)  # pre-prepared, not prepared: the PREPARE again
    assert [(to, type(msg)) for to, msg in h.sends()] == [("r0", m.Prepare)]
    for other in ("r2", "r3"):
        h.deliver(other, m.Prepare(0, 1, pp.digest, h.membership.index_of(other) or 0))
    h.deliver("r0", pp)  # prepared: both votes, to the primary only
    assert [(to, type(msg)) for to, msg in h.sends()] == [("r0", m.Prepare), ("r0", m.Commit)]
    assert all(msg.seq == 1 and msg.digest == pp.digest for _, msg in h.sends())


@pytest.mark.parametrize("ts", [1, 2], ids=["retransmitted", "new"])
def test_a_request_in_a_view_change_does_not_start_the_new_view_timer_4_5_2(ts: int) -> None:
    """Clients send to every replica. One in a view change, cut off from the others, must not
    let a request start its timer: that is the NEW-VIEW wait, run only with 2f+1
    VIEW-CHANGEs. Found by the swarm (`medbft fuzz --n 4 --seed 95270`): a replica moved on
    to views 2 and 3 alone, and the other two, short of f+1 replicas above them, never
    followed; liveness was lost for good."""
    h = Harness(me="r0")
    h.deliver("client-1", h.request())
    h.effects = h.replica.step(Timeout("view-change"), 0)
    assert h.replica.view == 1 and not h.replica.view_active
    h.deliver("client-1", h.request(ts))
    assert not [e for e in h.effects if isinstance(e, SetTimer) and e.key == "view-change"]
    assert "view-change" not in h.replica.out.timers
    # with 2f+1 VIEW-CHANGEs the NEW-VIEW wait starts, as before
    h.deliver("r2", _view_change(h, "r2", 1))
    h.deliver("r3", _view_change(h, "r3", 1))
    assert [e for e in h.effects if isinstance(e, SetTimer) and e.key == "view-change"]


def _view_change(h: Harness, signer: str, view: int, prepared=(), preprepared=()) -> m.ViewChange:
    idx = h.membership.index_of(signer)
    assert idx is not None
    vc = m.ViewChange(view, 0, (), tuple(prepared), tuple(preprepared), idx, b"")
    return h.signed(vc, signer)  # type: ignore[return-value]


def test_join_higher_view_on_f_plus_1_view_changes_4_5_2() -> None:
    h = Harness(me="r3")
    h.deliver("r1", _view_change(h, "r1", 1))
    assert h.replica.view == 0
    h.deliver("r2", _view_change(h, "r2", 1))
    assert h.replica.view == 1 and not h.replica.view_active
    assert len(h.sends("VIEW-CHANGE")) == 3


def test_new_primary_sends_new_view_after_2f_view_changes_from_others_4_4() -> None:
    h = Harness(me="r1")
    h.replica.step(Timeout("view-change"), 0)
    h.deliver("r2", _view_change(h, "r2", 1))
    assert h.sends("NEW-VIEW") == []
    h.deliver("r3", _view_change(h, "r3", 1))
    nvs = h.sends("NEW-VIEW")
    assert len(nvs) == 3
    nv = nvs[0][1]
    assert isinstance(nv, m.NewView) and len(nv.view_changes) == 3 and nv.assignments == ()
    assert h.replica.view_active and h.replica.view == 1


def test_forged_view_change_is_rejected() -> None:
    h = Harness(me="r1")
    vc = m.replace(_view_change(h, "r2", 1), signature=b"\x00" * 64)
    h.deliver("r2", vc)
    assert h.replica.dropped["bad view-change signature"] == 1


def test_decide_new_view_keeps_a_prepared_digest_and_fills_gaps_with_null() -> None:
    h = Harness()
    d = b"\x07" * 32
    vcs = [
        _view_change(h, "r0", 1, prepared=[m.SeqDigest(2, d, 0)],
                     preprepared=[m.SeqDigest(2, d, 0)]),
        _view_change(h, "r1", 1, preprepared=[m.SeqDigest(2, d, 0)]),
        _view_change(h, "r2", 1),
    ]
    out = decide_new_view(vcs, 4, 1, 3)
    assert out == (m.SeqDigest(1, NULL_DIGEST, 0), m.SeqDigest(2, d, 0))


def test_decide_new_view_ignores_a_prepared_claim_nobody_backs() -> None:
    """A Byzantine replica claims seq 1 prepared with a digest no one pre-prepared: with V of 3
    that is not decidable (neither A nor B holds); with a 4th honest VIEW-CHANGE, null wins."""
    h = Harness()
    fake = m.SeqDigest(1, b"\x66" * 32, 0)
    vcs = [_view_change(h, "r0", 1, prepared=[fake], preprepared=[fake]),
           _view_change(h, "r1", 1), _view_change(h, "r2", 1)]
    assert decide_new_view(vcs, 4, 1, 3) is None
    vcs.append(_view_change(h, "r3", 1))
    assert decide_new_view(vcs, 4, 1, 3) == (m.SeqDigest(1, NULL_DIGEST, 0),)


def test_new_view_whose_O_does_not_follow_from_V_is_rejected() -> None:
    h = Harness(me="r2")
    h.replica.step(Timeout("view-change"), 0)
    vcs = tuple(_view_change(h, r, 1) for r in ("r1", "r2", "r3"))
    bogus = m.NewView(1, vcs, (m.SeqDigest(1, b"\x09" * 32, 0),), 1, b"")
    h.deliver("r1", h.signed(bogus, "r1"))
    assert h.replica.dropped["new-view O set does not follow from V"] == 1
    assert not h.replica.view_active


def _new_view_1(h: Harness) -> m.NewView:
    vcs = tuple(_view_change(h, r, 1) for r in ("r1", "r2", "r3"))
    return h.signed(m.NewView(1, vcs, (), 1, b""), "r1")  # type: ignore[return-value]


def test_replica_behind_gets_the_new_view_relayed_and_installs_it() -> None:
    """Found by the swarm (n=4, seed 925): a replica cut off during a view change stays in
    the old view. A peer in the new view that hears it (an old-view message) relays the
    NEW-VIEW, which proves itself; the replica installs it though the relay is not its
    primary."""
    ahead = Harness(me="r2")
    ahead.deliver("r1", _new_view_1(ahead))
    assert ahead.replica.view == 1 and ahead.replica.view_active
    ahead.deliver("r0", pre_prepare(ahead, view=0))  # r0 still proposes in view 0
    assert ahead.replica.dropped["old view"] == 1
    relayed = ahead.sends("NEW-VIEW")
    assert [to for to, _ in relayed] == ["r0"]
    ahead.deliver("r0", pre_prepare(ahead, seq=2, view=0))
    assert ahead.sends("NEW-VIEW") == [], "at most one relay per peer per timeout"
    ahead.now += ahead.replica.config.view_change_timeout_ns
    ahead.deliver("r0", pre_prepare(ahead, seq=3, view=0))
    assert len(ahead.sends("NEW-VIEW")) == 1, "the relay is repeated in case it was lost"

    behind = Harness(me="r0")
    behind.deliver("r2", relayed[0][1])
    assert behind.replica.view == 1 and behind.replica.view_active


def test_view_change_for_a_later_view_counts_as_a_replica_ahead() -> None:
    """A VIEW-CHANGE for view 2 says its sender installed view 1. With f+1 replicas seen
    ahead (here one buffered view-1 message and one VIEW-CHANGE for view 2), a replica that
    missed view 1 fetches state, whose answers carry the NEW-VIEW."""
    h = Harness(me="r0")
    h.deliver("r1", m.Commit(1, 1, b"\x01" * 32, 1))  # buffered: a later view
    assert h.sends("FETCH-STATE") == []
    h.deliver("r3", _view_change(h, "r3", 2))
    assert h.replica.view == 0, "one VIEW-CHANGE is not f+1: no joining"
    assert len(h.sends("FETCH-STATE")) == 3


def test_view_changes_for_the_view_we_await_are_not_a_replica_ahead() -> None:
    """Peers sending VIEW-CHANGEs for the view a replica is itself waiting to install wait with
    it; they are not ahead, so no state is fetched (it once cost a FETCH-STATE round per view
    change). Normal-case messages of that view do show it installed, and f+1 of them do."""
    h = Harness(me="r0")  # not the primary of view 1
    h.deliver("client-1", h.request())
    h.effects = h.replica.step(Timeout("view-change"), 0)
    assert h.replica.view == 1 and not h.replica.view_active
    for r in ("r2", "r3"):
        h.deliver(r, _view_change(h, r, 1))
        assert h.sends("FETCH-STATE") == []
    assert h.replica.view == 1 and not h.replica.view_active
    h.deliver("r2", m.Commit(1, 1, b"\x01" * 32, 2))  # r2 installed view 1
    assert h.sends("FETCH-STATE") == []
    h.deliver("r3", m.Prepare(1, 1, b"\x01" * 32, 3))  # and so did r3: f+1 ahead
    assert len(h.sends("FETCH-STATE")) == 3


def test_primary_watches_its_proposal_with_the_retransmit_timer_6_1() -> None:
    """Found by the swarm (seed 925): the next slot's COMMITs may be lost while nothing else
    arms the retransmit timer; proposing it must."""
    h = Harness(me="r0")
    h.deliver("client-1", h.request())
    assert any(isinstance(e, SetTimer) and e.key == "retransmit" for e in h.effects)


# -- checkpoints (§4.3) ------------------------------------------------------------------------


def _signed_checkpoint(h: Harness, signer: str, seq: int, digest: bytes) -> m.Checkpoint:
    idx = h.membership.index_of(signer)
    assert idx is not None
    return h.signed(m.Checkpoint(seq, digest, idx, b""), signer)  # type: ignore[return-value]


def test_checkpoint_becomes_stable_on_2f_plus_1_matching_and_collects_garbage_4_3() -> None:
    h = Harness(config=Config(checkpoint_interval=1, watermark_window=4))
    pp = pre_prepare(h)
    h.deliver("r0", pp)
    h.deliver("r2", m.Prepare(0, 1, pp.digest, 2))
    h.deliver("r0", m.Commit(0, 1, pp.digest, 0))
    h.deliver("r2", m.Commit(0, 1, pp.digest, 2))
    cps = h.sends("CHECKPOINT")
    assert len(cps) == 3
    own = cps[0][1]
    assert isinstance(own, m.Checkpoint) and own.seq == 1
    h.deliver("r2", _signed_checkpoint(h, "r2", 1, b"\x00" * 32))  # mismatching digest
    assert h.replica.h == 0
    h.deliver("r3", _signed_checkpoint(h, "r3", 1, own.digest))
    assert h.replica.h == 0, "own + r3 = 2 matching, 2f+1 = 3 needed"
    assert 1 in h.replica.log.slots
    h.deliver("r0", _signed_checkpoint(h, "r0", 1, own.digest))
    assert h.replica.h == 1 and 1 not in h.replica.log.slots
    assert len(h.replica.checkpoints.stable_proof) == 3


def test_forged_checkpoint_is_rejected() -> None:
    h = Harness(config=Config(checkpoint_interval=1, watermark_window=4))
    cp = m.replace(_signed_checkpoint(h, "r2", 1, b"\x01" * 32), digest=b"\x02" * 32)
    h.deliver("r2", cp)
    assert h.replica.dropped["bad checkpoint signature"] == 1


def test_remembered_trace_texts_are_the_texts_and_stay_bounded() -> None:
    from node.pbft import normal_case as nc

    for i in range(nc.TEXTS_KEPT + 10):
        digest = i.to_bytes(32, "big")
        assert nc._hex(digest) == digest.hex()
        assert nc._hex(digest) is nc._hex(digest)
        key = (f"client-{i % 7}", i % 3, i)
        assert nc._key_str(key) == f"client-{i % 7}/{i % 3}/{i}"
        assert len(nc._hexes) <= nc.TEXTS_KEPT and len(nc._key_strs) <= nc.TEXTS_KEPT
