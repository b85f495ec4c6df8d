"""Tests for node.crypto: identities, signatures, MACs, cost counters, the verify cache."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from node import crypto
from node.crypto import (
    SIGNATURE_BYTES,
    Costs,
    Identity,
    Keyring,
    VerifyCache,
    public_key_from_bytes,
)

# Order of the P-256 group (FIPS 186-4 D.1.2.3), written out independently of the module.
P256_ORDER = int(
    "115792089210356248762697446949407573529996955224135760342422259061068512044369"
)
SEED = b"test-seed"
PARTIES = ("hospital-1", "pharmacy-1", "regulator-1", "client-1")
IDS = {p: Identity.from_seed(p, SEED) for p in PARTIES}
PUBLIC = {p: ident.public_bytes for p, ident in IDS.items()}


def keyring(party: str, **kwargs: object) -> Keyring:
    return Keyring(IDS[party], PUBLIC, **kwargs)  # type: ignore[arg-type]


def split(sig: bytes) -> tuple[int, int]:
    return int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")


def join(r: int, s: int) -> bytes:
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


# ---------------------------------------------------------------------------------------------
# Identities


def test_module_order_is_p256_order() -> None:
    assert crypto._ORDER == P256_ORDER


def test_from_seed_is_deterministic() -> None:
    a = Identity.from_seed("hospital-1", SEED)
    b = Identity.from_seed("hospital-1", SEED)
    assert a.public_bytes == b.public_bytes == IDS["hospital-1"].public_bytes
    assert a.id == "hospital-1"
    assert len(a.public_bytes) == 65 and a.public_bytes[0] == 0x04


def test_from_seed_differs_by_id_and_seed() -> None:
    keys = {Identity.from_seed(p, SEED).public_bytes for p in PARTIES}
    assert len(keys) == len(PARTIES)
    assert (Identity.from_seed("hospital-1", b"other-seed").public_bytes
            != IDS["hospital-1"].public_bytes)
    ids = [f"hospital-{i}" for i in range(1, 30)] + [f"client-{i}" for i in range(1, 30)]
    assert len({Identity.from_seed(i, SEED).public_bytes for i in ids}) == len(ids)


def test_generate_gives_fresh_keys() -> None:
    assert Identity.generate("x").public_bytes != Identity.generate("x").public_bytes


def test_pem_round_trip() -> None:
    ident = IDS["regulator-1"]
    pem = ident.private_pem()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    back = Identity.from_pem("regulator-1", pem)
    assert back.id == "regulator-1"
    assert back.public_bytes == ident.public_bytes
    assert back.private_pem() == pem
    # The restored key signs identically (deterministic ECDSA) and verifies at a peer.
    data = b"checkpoint 128"
    restored = Keyring(back, PUBLIC)
    sig = restored.sign(data)
    assert sig == keyring("regulator-1").sign(data)
    assert keyring("hospital-1").verify("regulator-1", data, sig)


def test_from_pem_rejects_non_ec_key() -> None:
    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    with pytest.raises(ValueError):
        Identity.from_pem("x", pem)


def test_public_key_from_bytes() -> None:
    key = public_key_from_bytes(PUBLIC["hospital-1"])
    assert key.public_bytes(serialization.Encoding.X962,
                            serialization.PublicFormat.UncompressedPoint) == PUBLIC["hospital-1"]
    for bad in (b"", b"\x04" + b"\x00" * 64, PUBLIC["hospital-1"][:-1]):
        with pytest.raises(ValueError):
            public_key_from_bytes(bad)


# ---------------------------------------------------------------------------------------------
# Signatures

DATA = b"<VIEW-CHANGE, 3, 128, C, P, Q, 1>"


def test_signature_is_64_bytes_and_deterministic() -> None:
    kr = keyring("hospital-1")
    sig = kr.sign(DATA)
    assert len(sig) == SIGNATURE_BYTES == 64
    assert kr.sign(DATA) == sig
    assert keyring("hospital-1").sign(DATA) == sig  # fresh keyring, same key
    assert kr.sign(DATA + b"!") != sig
    assert keyring("pharmacy-1").sign(DATA) != sig
    r, s = split(sig)
    assert 0 < r < P256_ORDER and 0 < s < P256_ORDER


def test_many_signatures_are_64_bytes() -> None:
    # r or s with leading zero bytes must still be padded to 32 bytes each.
    kr = keyring("client-1")
    verifier = keyring("hospital-1")
    for i in range(200):
        sig = kr.sign(i.to_bytes(4, "big"))
        assert len(sig) == 64
        assert verifier.verify("client-1", i.to_bytes(4, "big"), sig)


def test_verify_accepts_right_party_and_data() -> None:
    sig = keyring("hospital-1").sign(DATA)
    for verifier in PARTIES:
        assert keyring(verifier).verify("hospital-1", DATA, sig) is True


def test_verify_rejects_tampered_data() -> None:
    sig = keyring("hospital-1").sign(DATA)
    kr = keyring("pharmacy-1")
    assert kr.verify("hospital-1", DATA + b"\x00", sig) is False
    assert kr.verify("hospital-1", DATA[:-1], sig) is False
    assert kr.verify("hospital-1", b"", sig) is False
    flipped = bytes([DATA[0] ^ 1]) + DATA[1:]
    assert kr.verify("hospital-1", flipped, sig) is False


@pytest.mark.parametrize("index", [0, 1, 31, 32, 33, 63])
def test_verify_rejects_tampered_signature(index: int) -> None:
    sig = bytearray(keyring("hospital-1").sign(DATA))
    sig[index] ^= 0x01
    assert keyring("pharmacy-1").verify("hospital-1", DATA, bytes(sig)) is False


def test_verify_rejects_wrong_and_unknown_party() -> None:
    sig = keyring("hospital-1").sign(DATA)
    kr = keyring("pharmacy-1")
    assert kr.verify("regulator-1", DATA, sig) is False
    assert kr.verify("pharmacy-1", DATA, sig) is False
    assert kr.verify("stranger", DATA, sig) is False
    assert kr.verify("", DATA, sig) is False
    assert not kr.knows("stranger") and kr.knows("hospital-1")


def test_verify_rejects_party_with_invalid_public_key() -> None:
    sig = keyring("hospital-1").sign(DATA)
    kr = Keyring(IDS["pharmacy-1"], {**PUBLIC, "broken": b"\x04" + b"\x00" * 64})
    assert kr.verify("broken", DATA, sig) is False


@pytest.mark.parametrize("length", [0, 1, 32, 63, 65, 128])
def test_verify_rejects_wrong_length(length: int) -> None:
    sig = keyring("hospital-1").sign(DATA)
    bad = (sig * 2)[:length]
    assert keyring("pharmacy-1").verify("hospital-1", DATA, bad) is False


@pytest.mark.parametrize(
    "which, value",
    [("r", 0), ("s", 0), ("r", P256_ORDER), ("s", P256_ORDER), ("r", P256_ORDER + 1),
     ("s", P256_ORDER + 5), ("r", (1 << 256) - 1), ("s", (1 << 256) - 1)],
)
def test_verify_rejects_out_of_range_r_or_s(which: str, value: int) -> None:
    r, s = split(keyring("hospital-1").sign(DATA))
    bad = join(value, s) if which == "r" else join(r, value)
    assert keyring("pharmacy-1").verify("hospital-1", DATA, bad) is False


def test_verify_rejects_r_plus_order_aliases() -> None:
    # r and r + n are the same value mod n; a range check must not let the alias through.
    r, s = split(keyring("hospital-1").sign(DATA))
    if r + P256_ORDER < (1 << 256):
        assert keyring("pharmacy-1").verify("hospital-1", DATA, join(r + P256_ORDER, s)) is False
    if s + P256_ORDER < (1 << 256):
        assert keyring("pharmacy-1").verify("hospital-1", DATA, join(r, s + P256_ORDER)) is False


def test_verify_all_zero_signature() -> None:
    assert keyring("pharmacy-1").verify("hospital-1", DATA, b"\x00" * 64) is False


# ---------------------------------------------------------------------------------------------
# MACs


def test_mac_session_key_is_shared_by_both_ends() -> None:
    a, b = keyring("hospital-1"), keyring("pharmacy-1")
    x = b"<PREPARE, 2, 129, d, 1>"
    tag = a.mac("pharmacy-1", x)
    assert len(tag) == 32
    assert b.check_mac("hospital-1", x, tag) is True
    assert b.mac("hospital-1", x) == tag  # symmetric session key
    assert a.mac("pharmacy-1", x) == tag  # deterministic


def test_mac_is_pairwise() -> None:
    a, c = keyring("hospital-1"), keyring("regulator-1")
    x = b"<COMMIT, 2, 129, d, 0>"
    tag = a.mac("pharmacy-1", x)
    # A third party neither shares that key with a nor can check a's MAC for someone else.
    assert c.check_mac("hospital-1", x, tag) is False
    assert a.mac("regulator-1", x) != tag
    assert c.check_mac("hospital-1", x, a.mac("regulator-1", x)) is True
    # A MAC from b to a does not pass as a MAC from c to a.
    assert a.check_mac("regulator-1", x, keyring("pharmacy-1").mac("hospital-1", x)) is False


def test_mac_rejects_tampering() -> None:
    a, b = keyring("hospital-1"), keyring("pharmacy-1")
    x = b"<PREPARE, 2, 129, d, 1>"
    tag = a.mac("pharmacy-1", x)
    assert b.check_mac("hospital-1", x + b"\x00", tag) is False
    assert b.check_mac("hospital-1", x[1:], tag) is False
    bad = bytearray(tag)
    bad[5] ^= 0x80
    assert b.check_mac("hospital-1", x, bytes(bad)) is False
    assert b.check_mac("hospital-1", x, tag[:-1]) is False
    assert b.check_mac("hospital-1", x, b"") is False


def test_mac_is_keyed_blake2b_under_the_session_key() -> None:
    a = keyring("hospital-1")
    x = b"payload"
    tag = a.mac("client-1", x)
    key = a._mac_key("client-1")
    assert key is not None and len(key) == 32
    assert tag == hashlib.blake2b(x, key=key, digest_size=32).digest()
    assert tag != hashlib.blake2b(x, digest_size=32).digest()  # the key is used
    assert keyring("client-1")._mac_key("hospital-1") == key


def test_mac_unknown_party() -> None:
    a = keyring("hospital-1")
    with pytest.raises(KeyError):
        a.mac("stranger", b"x")
    assert a.check_mac("stranger", b"x", b"\x00" * 32) is False


# ---------------------------------------------------------------------------------------------
# Costs


def test_costs_count_each_operation() -> None:
    costs = Costs()
    kr = keyring("hospital-1", costs=costs)
    assert costs.snapshot() == (0, 0, 0, 0, 0, 0, 0)
    sig = kr.sign(DATA)
    assert costs.sign == 1
    kr.sign(DATA)
    assert costs.sign == 2
    kr.verify("hospital-1", DATA, sig)
    kr.verify("hospital-1", DATA, b"short")  # rejected early: still charged
    kr.verify("stranger", DATA, sig)
    assert costs.verify == 3
    tag = kr.mac("pharmacy-1", DATA)
    kr.check_mac("pharmacy-1", DATA, tag)
    kr.check_mac("stranger", DATA, tag)
    assert costs.mac == 3
    assert costs.snapshot() == (0, 0, 2, 3, 3, 0, 0)


def test_costs_default_and_shared() -> None:
    kr = keyring("hospital-1")
    assert isinstance(kr.costs, Costs)
    kr.sign(b"x")
    assert kr.costs.sign == 1
    shared = Costs()
    a, b = keyring("hospital-1", costs=shared), keyring("pharmacy-1", costs=shared)
    b.check_mac("hospital-1", b"x", a.mac("pharmacy-1", b"x"))
    assert shared.mac == 2


def test_cached_verify_still_counts() -> None:
    costs = Costs()
    kr = keyring("pharmacy-1", costs=costs, verify_cache=VerifyCache())
    sig = keyring("hospital-1").sign(DATA)
    for _ in range(5):
        assert kr.verify("hospital-1", DATA, sig)
    assert costs.verify == 5


# ---------------------------------------------------------------------------------------------
# VerifyCache


def test_verify_cache_gives_same_answers() -> None:
    cache = VerifyCache()
    signer = keyring("hospital-1")
    cached = [keyring(p, verify_cache=cache) for p in ("pharmacy-1", "regulator-1")]
    plain = keyring("pharmacy-1")
    sig = signer.sign(DATA)
    tampered = bytes([sig[0] ^ 1]) + sig[1:]
    cases = [
        ("hospital-1", DATA, sig),
        ("hospital-1", DATA + b"x", sig),
        ("hospital-1", DATA, tampered),
        ("regulator-1", DATA, sig),  # same (data, sig) under another party's key
        ("hospital-1", DATA, join(0, split(sig)[1])),
    ]
    expected = [plain.verify(*case) for case in cases]
    assert expected == [True, False, False, False, False]
    for _ in range(2):  # second round answered from the cache
        for kr in cached:
            assert [kr.verify(*case) for case in cases] == expected
    assert 0 < len(cache.results) <= len(cases)


def test_verify_cache_is_keyed_by_public_key() -> None:
    cache = VerifyCache()
    kr = keyring("pharmacy-1", verify_cache=cache)
    sig = keyring("hospital-1").sign(DATA)
    assert kr.verify("hospital-1", DATA, sig) is True
    assert kr.verify("regulator-1", DATA, sig) is False
    assert kr.verify("hospital-1", DATA, sig) is True


def test_verify_cache_is_bounded() -> None:
    cache = VerifyCache(limit=3)
    for i in range(20):
        cache.put(bytes([i]), i % 2 == 0)
        assert len(cache.results) <= 3
        assert cache.get(bytes([i])) is (i % 2 == 0)
    assert cache.get(b"never") is None


def test_verify_cache_bounded_in_use() -> None:
    cache = VerifyCache(limit=4)
    signer = keyring("client-1")
    kr = keyring("hospital-1", verify_cache=cache)
    for i in range(12):
        data = b"req %d" % i
        sig = signer.sign(data)
        assert kr.verify("client-1", data, sig) is True
        assert kr.verify("client-1", data + b"!", sig) is False
        assert len(cache.results) <= 4


@pytest.mark.pure_python  # patches Keyring._verify_uncached to see whether it runs
def test_a_signer_with_a_shared_cache_spares_its_verifiers_the_check(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Keyring.sign records its own signature as valid in a shared cache: a verifier in the
    same process answers from it without computing the check, and anything else (a changed
    byte or signature, another party's name, a verifier holding another key for the signer)
    is verified for real and refused, exactly as with no cache."""
    cache = VerifyCache()
    signer = keyring("hospital-1", verify_cache=cache)
    costs = Costs()
    verifier = keyring("pharmacy-1", costs=costs, verify_cache=cache)
    sig = signer.sign(DATA)
    assert sig == keyring("hospital-1").sign(DATA)  # the same signature as without a cache
    assert cache.results == {hashlib.sha256(PUBLIC["hospital-1"] + sig + DATA).digest(): True}

    computed: list[bytes] = []
    real = Keyring._verify_uncached

    def spy(self: Keyring, party: str, pub: bytes, data: bytes, signature: bytes) -> bool:
        computed.append(data)
        return real(self, party, pub, data, signature)

    monkeypatch.setattr(Keyring, "_verify_uncached", spy)
    assert verifier.verify("hospital-1", DATA, sig) is True
    assert computed == [] and costs.verify == 1  # answered, and still charged
    tampered = bytes([sig[0] ^ 1]) + sig[1:]
    assert verifier.verify("hospital-1", DATA + b"x", sig) is False
    assert verifier.verify("hospital-1", DATA, tampered) is False
    assert verifier.verify("regulator-1", DATA, sig) is False
    assert len(computed) == 3
    # A verifier whose membership holds another key for the signer checks for real.
    wrong = Keyring(IDS["pharmacy-1"], {**PUBLIC, "hospital-1": PUBLIC["client-1"]},
                    verify_cache=cache)
    assert wrong.verify("hospital-1", DATA, sig) is False
    assert len(computed) == 4
    # Without a shared cache nothing is recorded and every check is computed.
    plain = keyring("hospital-1")
    sig2 = plain.sign(DATA + b"2")
    assert verifier.verify("hospital-1", DATA + b"2", sig2) is True
    assert len(computed) == 5


def test_a_signers_entry_is_what_verifying_records() -> None:
    """The entry Keyring.sign records is the one a computed verification would record (same
    key, same answer); without patching, so the compiled modules run it too."""
    signed, computed = VerifyCache(), VerifyCache()
    sig = keyring("hospital-1", verify_cache=signed).sign(DATA)
    assert keyring("pharmacy-1", verify_cache=computed).verify("hospital-1", DATA, sig)
    assert signed.results == computed.results and list(signed.results.values()) == [True]
    verifier = keyring("pharmacy-1", verify_cache=signed)
    assert verifier.verify("hospital-1", DATA, sig) is True
    assert verifier.verify("hospital-1", DATA + b"x", sig) is False
    assert sorted(signed.results.values()) == [False, True]


class CountingBase:
    """Stands in for a keyring's keyed BLAKE2b base for one party, counting the MACs
    computed from it."""

    def __init__(self, real: object) -> None:
        self.real, self.copies = real, 0

    def copy(self) -> object:
        self.copies += 1
        return self.real.copy()  # type: ignore[attr-defined]


def test_a_message_sealed_in_the_process_answers_its_receivers_check() -> None:
    """With a shared cache, a message a keyring sealed for a party (`remember_sealed`) is
    opened, once, by the keyring that holds the same session key for its sender: sender and
    payload from the record, without computing the MAC; anything else (another receiver's
    copy, bytes never sealed, a message already opened, no shared cache) is not, and the
    caller reads and checks it."""
    cache = VerifyCache()
    a = keyring("hospital-1", verify_cache=cache)
    b = keyring("pharmacy-1", verify_cache=cache)
    c = keyring("regulator-1", verify_cache=cache)
    b.mac("hospital-1", b"derive the key"), c.mac("hospital-1", b"derive the key")
    counted = CountingBase(b._mac_bases["hospital-1"])
    b._mac_bases["hospital-1"] = counted  # type: ignore[assignment]
    data = b"hospital-1\x00prepare"
    tags = a.macs(("pharmacy-1", "regulator-1"), data)
    assert tags == keyring("hospital-1").macs(("pharmacy-1", "regulator-1"), data)
    to_b, to_c = b"envelope|" + tags[0], b"envelope|" + tags[1]
    a.remember_sealed(("pharmacy-1", "regulator-1"), (to_b, to_c), "hospital-1", b"prepare")
    assert b.open_sealed(to_b) == ("hospital-1", b"prepare")
    assert counted.copies == 0
    assert b.open_sealed(to_b) is None  # opened already: a replay is read and checked
    assert b.open_sealed(to_c) is None  # regulator-1's copy (now taken) ...
    assert c.open_sealed(to_c) is None  # ... so its receiver reads and checks it
    assert b.open_sealed(b"envelope|" + bytes(32)) is None
    assert counted.copies == 0 and cache.sealed == {}
    # A record naming another sender than the key's holds for nobody else.
    a.remember_sealed(("pharmacy-1",), (to_b,), "regulator-1", b"prepare")
    assert b.open_sealed(to_b) is None
    # Without a shared cache nothing is remembered; bounded with one.
    plain = keyring("hospital-1")
    assert not plain.seals and a.seals
    plain.remember_sealed(("pharmacy-1",), (to_b,), "hospital-1", b"prepare")
    assert keyring("pharmacy-1").open_sealed(to_b) is None
    small = VerifyCache(sealed_limit=2)
    d = keyring("client-1", verify_cache=small)
    for i in range(5):
        d.mac("hospital-1", b"x")
        d.remember_sealed(("hospital-1",), (b"%d" % i,), "client-1", b"x")
        assert len(small.sealed) <= 2
    with pytest.raises(ValueError):
        a.remember_sealed(("pharmacy-1",), (to_b, to_c), "hospital-1", b"p")  # one per party


def test_verify_cache_default_limit() -> None:
    assert VerifyCache().limit == 200_000



def test_a_shared_cache_derives_each_session_key_once_and_the_same_key() -> None:
    """Keyrings of one simulation share session keys: the pair's key is derived by whichever
    end needs it first, is the key each end would derive alone, and MACs interoperate with a
    keyring that has no cache (a real node)."""
    cache = VerifyCache()
    a, b = keyring("hospital-1", verify_cache=cache), keyring("pharmacy-1", verify_cache=cache)
    tag = a.mac("pharmacy-1", b"prepare")
    assert len(cache.session_keys) == 1
    assert b.check_mac("hospital-1", b"prepare", tag)
    assert len(cache.session_keys) == 1  # b reused a's derivation
    alone = keyring("pharmacy-1")
    assert alone.check_mac("hospital-1", b"prepare", tag)
    assert alone.mac("hospital-1", b"x") == b.mac("hospital-1", b"x")
    assert not alone.check_mac("regulator-1", b"prepare", tag)  # another pair, another key
