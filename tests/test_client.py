"""node/client.py: the PBFT client core on its own (OSDI '99 §4.1). It signs requests and sends
them to the primary, settles a request on f+1 matching replies, retransmits to every replica on
timeout, and ignores replies it cannot trust. Replies are built here with the replicas' keys."""

from __future__ import annotations

import pytest

from node import messages as m
from node.client import Accepted, Client
from node.crypto import Costs, Keyring
from node.events import CancelTimer, Receive, Send, SetTimer, Timeout, Trace
from sim.memnet import make_membership

TIMEOUT = 300_000_000


class Parties:
    def __init__(self, n: int = 4) -> None:
        self.membership, idents = make_membership(n)
        pubs = self.membership.public_keys()
        self.keys = {p: Keyring(i, pubs, Costs()) for p, i in idents.items()}
        self.client = Client(self.membership, self.keys["client-1"], TIMEOUT)

    def reply(self, replica: int, result: bytes = b"ok", *, view: int = 0, ts: int = 1,
              session: int = 0, sender: str | None = None, claimed: int | None = None,
              client: str = "client-1", mac: bytes | None = None) -> Receive:
        sender = sender or f"r{replica}"
        payload = m.encode(m.Reply(view, ts, client, session,
                                   replica if claimed is None else claimed, result))
        if mac is None:
            mac = self.keys[sender].mac("client-1", sender.encode() + b"\x00" + payload)
        return Receive(m.encode(m.Envelope(sender, payload, mac)))

    def step(self, event: Receive | Timeout) -> list[object]:
        return list(self.client.step(event, 0))


def sent_request(effect: object) -> tuple[str, m.Request]:
    assert isinstance(effect, Send) and effect.kind == "REQUEST"
    env = m.decode(effect.data)
    assert isinstance(env, m.Envelope) and env.sender == "client-1" and env.mac == b""
    req = m.decode(env.payload)
    assert isinstance(req, m.Request)
    return effect.to, req


# -- submitting ----------------------------------------------------------------------------------


def test_submit_sends_a_signed_request_to_the_primary_and_arms_the_timer() -> None:
    p = Parties()
    effects = p.client.submit(0, b"put a 1")
    assert len(effects) == 2
    to, req = sent_request(effects[0])
    assert to == "r0"
    assert (req.op, req.timestamp, req.client, req.session) == (b"put a 1", 1, "client-1", 0)
    assert p.keys["r2"].verify("client-1", req.unsigned(), req.signature)
    assert not p.keys["r2"].verify("client-1", req.unsigned() + b"x", req.signature)
    assert effects[1] == SetTimer("retry:0", TIMEOUT)
    assert p.client.costs.sign == 1


def test_timestamps_count_per_session() -> None:
    p = Parties()
    _, a1 = sent_request(p.client.submit(0, b"a")[0])
    _, b1 = sent_request(p.client.submit(7, b"b")[0])
    p.step(p.reply(0, session=0))
    p.step(p.reply(1, session=0))
    _, a2 = sent_request(p.client.submit(0, b"c")[0])
    assert [(r.session, r.timestamp) for r in (a1, b1, a2)] == [(0, 1), (7, 1), (0, 2)]


def test_one_request_in_flight_per_session() -> None:
    p = Parties()
    p.client.submit(0, b"a")
    with pytest.raises(RuntimeError, match="session 0 already has a request in flight"):
        p.client.submit(0, b"b")


# -- settling on f+1 matching replies ------------------------------------------------------------


@pytest.mark.parametrize(("n", "needed"), [(4, 2), (7, 3), (10, 4)])
def test_a_result_is_accepted_on_f_plus_1_matching_replies(n: int, needed: int) -> None:
    p = Parties(n)
    p.client.submit(0, b"put a 1")
    for i in range(needed - 1):
        assert p.step(p.reply(i)) == [], f"{i + 1} replies of {needed} must not settle"
    effects = p.step(p.reply(needed - 1))
    assert effects == [CancelTimer("retry:0"), Accepted(0, 1, b"ok", 0, needed)]
    assert p.client.outstanding == {}


def test_replies_with_different_results_do_not_add_up() -> None:
    p = Parties()
    p.client.submit(0, b"op")
    assert p.step(p.reply(0, b"yes")) == []
    assert p.step(p.reply(1, b"no")) == []
    assert p.step(p.reply(2, b"maybe")) == []
    assert p.step(p.reply(3, b"no"))[-1] == Accepted(0, 1, b"no", 0, 2)


def test_the_same_replica_replying_twice_counts_once() -> None:
    p = Parties()
    p.client.submit(0, b"op")
    assert p.step(p.reply(1)) == []
    assert p.step(p.reply(1)) == []
    assert p.step(p.reply(2))[-1] == Accepted(0, 1, b"ok", 0, 2)


def test_late_and_stale_replies_are_ignored() -> None:
    p = Parties()
    p.client.submit(0, b"op")
    p.step(p.reply(0))
    p.step(p.reply(1))
    assert p.step(p.reply(2)) == [], "a third reply to a settled request"
    p.client.submit(0, b"next")
    assert p.step(p.reply(0, ts=1)) == [], "a reply to the previous timestamp"
    assert p.step(p.reply(1, ts=1)) == []
    assert p.client.outstanding[0].replies == {}


def test_the_client_learns_the_view_from_f_plus_1_replies() -> None:
    p = Parties()
    p.client.submit(0, b"op")
    assert p.step(p.reply(1, view=5)) == []
    accepted = p.step(p.reply(2, view=1))[-1]
    # f+1 = 2 replies say view >= 1; one faulty replica cannot claim view 5 alone.
    assert accepted == Accepted(0, 1, b"ok", 1, 2)
    assert p.client.view == 1
    to, _ = sent_request(p.client.submit(0, b"next")[0])
    assert to == "r1", "the primary of view 1"


# -- untrusted replies ---------------------------------------------------------------------------


def test_a_reply_with_a_bad_mac_is_dropped() -> None:
    p = Parties()
    p.client.submit(0, b"op")
    assert p.step(p.reply(0, mac=b"\x00" * 32)) == [
        Trace("drop", {"reason": "bad MAC", "kind": "REPLY"})]
    p.step(p.reply(1))
    assert p.client.outstanding, "the forged reply must not count towards f+1"


def test_one_replica_cannot_reply_in_anothers_name() -> None:
    p = Parties()
    p.client.submit(0, b"op")
    p.step(p.reply(1))
    assert p.step(p.reply(1, claimed=2)) == [
        Trace("drop", {"reason": "reply fields do not match sender", "kind": "REPLY"})]
    assert p.client.outstanding


def test_replies_for_another_client_or_from_non_replicas_are_dropped() -> None:
    p = Parties()
    p.client.submit(0, b"op")
    p.step(p.reply(0, client="client-9"))
    p.step(p.reply(0, sender="client-1", claimed=0))
    p.step(Receive(b"\xff garbage"))
    assert p.client.dropped == {"reply fields do not match sender": 1,
                                "not a reply from a replica": 1, "malformed": 1}
    assert p.client.outstanding


def test_a_replys_mac_is_checked_before_its_payload_is_parsed() -> None:
    p = Parties()
    p.client.submit(0, b"op")
    garbage = b"\xff" * 40
    forged = m.encode(m.Envelope("r0", garbage, b"\x00" * 32))
    sealed = m.encode(m.Envelope("r0", garbage, p.keys["r0"].mac(
        "client-1", b"r0\x00" + garbage)))
    not_reply = m.encode(m.Prepare(0, 1, b"d" * 32, 0))
    p.step(Receive(forged))      # unparseable, and not from r0: the MAC says so first
    p.step(Receive(sealed))      # from r0, but not a message
    p.step(Receive(m.encode(m.Envelope("r0", not_reply, p.keys["r0"].mac(
        "client-1", b"r0\x00" + not_reply)))))
    p.step(Receive(not_reply))   # a message, but not an envelope
    assert p.client.dropped == {"bad MAC": 1, "malformed": 1, "not a reply from a replica": 1,
                                "not an envelope": 1}
    assert p.client.outstanding


# -- retransmission ------------------------------------------------------------------------------


def test_timeout_retransmits_the_same_request_to_every_replica() -> None:
    p = Parties()
    _, original = sent_request(p.client.submit(3, b"op")[0])
    effects = p.step(Timeout("retry:3"))
    sends = [sent_request(e) for e in effects if isinstance(e, Send)]
    assert [to for to, _ in sends] == ["r0", "r1", "r2", "r3"]
    assert all(req == original for _, req in sends), "same timestamp and signature"
    assert effects[-2:] == [Trace("retransmit", {"session": 3, "timestamp": 1}),
                            SetTimer("retry:3", TIMEOUT)]
    p.step(Timeout("retry:3"))
    assert p.client.outstanding[3].retransmissions == 2


def test_a_timeout_after_settling_does_nothing() -> None:
    p = Parties()
    p.client.submit(0, b"op")
    p.step(p.reply(0))
    p.step(p.reply(1))
    assert p.step(Timeout("retry:0")) == []


def test_unknown_events_are_refused() -> None:
    p = Parties()
    with pytest.raises(TypeError, match="unknown event"):
        p.client.step("tick", 0)  # type: ignore[arg-type]
