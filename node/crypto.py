"""Identities, signatures and MACs: the authentication PBFT relies on.

Why this exists: PBFT's safety argument assumes a faulty replica cannot speak in another's
name. Clients sign REQUESTs with ECDSA P-256; CHECKPOINT, VIEW-CHANGE and NEW-VIEW are signed
because they travel inside proofs; every other replica-to-replica message carries a MAC
under a pairwise session key (the MAC optimisation of OSDI '99 §5.2): keyed BLAKE2b with a
32-byte tag (RFC 7693's keyed mode, a PRF by design, so no HMAC construction is needed
around it). It costs 0.6 us on a small message where HMAC-SHA256 costs 1.7 us, and every
message is MACed once and checked once, so the MAC is on the hot path of both modes.

Session keys come from static ECDH between the two parties' P-256 keys, stretched with HKDF,
so the genesis membership (ids and public keys) is all a party needs; no key distribution
round. (A production deployment would keep separate signing and key-agreement keys, or use
TLS; one key per identity keeps the membership file simple.)

Signatures are deterministic (RFC 6979) and encoded as fixed-size r||s (64 bytes), so that
a seeded simulation produces identical bytes on every run and message sizes do not wobble
with DER lengths.

What it must not know: messages, replicas, the network. It counts the operations it performs
(`Costs`) so that the simulator's CPU model can charge them in virtual time.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from hashlib import blake2b
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "MAC_BYTES",
    "SIGNATURE_BYTES",
    "Costs",
    "Identity",
    "Keyring",
    "RemembersChecks",
    "VerifyCache",
    "public_key_from_bytes",
]

SIGNATURE_BYTES = 64
#: Length of a MAC tag (keyed BLAKE2b digest size): the same as HMAC-SHA256 had, so message
#: sizes, and every simulated byte count, stayed the same when the MAC changed.
MAC_BYTES = 32
_CURVE = ec.SECP256R1()
_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_ECDSA = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)


@dataclass(slots=True)
class Costs:
    """Counters of work done, read by the simulator's CPU model (and by metrics)."""

    messages: int = 0
    bytes: int = 0
    sign: int = 0
    verify: int = 0
    mac: int = 0
    digest: int = 0
    execute: int = 0
    """Requests the state machine executed (counted by the replica, not by the keyring)."""

    def snapshot(self) -> tuple[int, int, int, int, int, int, int]:
        return (self.messages, self.bytes, self.sign, self.verify, self.mac, self.digest,
                self.execute)


class Identity:
    """A party's private key and id. `from_seed` derives the key deterministically."""

    __slots__ = ("id", "private_key", "public_bytes")

    def __init__(self, id: str, private_key: ec.EllipticCurvePrivateKey) -> None:
        self.id = id
        self.private_key = private_key
        self.public_bytes = private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )

    @classmethod
    def generate(cls, id: str) -> Identity:
        return cls(id, ec.generate_private_key(_CURVE))

    @classmethod
    def from_seed(cls, id: str, seed: bytes) -> Identity:
        """Derive a key from `seed` and `id` (simulation only: reproducible keys)."""
        material = hashlib.sha512(b"medbft-key|" + seed + b"|" + id.encode()).digest()
        scalar = int.from_bytes(material, "big") % (_ORDER - 1) + 1
        return cls(id, ec.derive_private_key(scalar, _CURVE))

    def private_pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @classmethod
    def from_pem(cls, id: str, pem: bytes) -> Identity:
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{id}: key is not an EC private key")
        return cls(id, key)


def public_key_from_bytes(data: bytes) -> ec.EllipticCurvePublicKey:
    """Load an uncompressed X9.62 P-256 point; raises ValueError if invalid."""
    return ec.EllipticCurvePublicKey.from_encoded_point(_CURVE, data)


class RemembersChecks(Protocol):
    """A frozen signed message that remembers the answer of its signature check under one
    public key (node.messages.Request): `Keyring.verify_signed` asks it first."""

    @property
    def signature(self) -> bytes: ...

    def unsigned(self) -> bytes: ...

    def checked_under(self, public: bytes | None) -> bool | None: ...

    def remember_check(self, public: bytes | None, ok: bool) -> None: ...


def _check_key(public: bytes, signature: bytes, data: bytes) -> bytes:
    """A signature check's key in `VerifyCache.results`: what a verifier looks up and a
    signer records must be the same key, so both ask here."""
    return hashlib.sha256(public + signature + data).digest()


@dataclass
class VerifyCache:
    """Memo of signature checks already done, shareable between replicas of one simulation.

    Verification is a pure function of (key, data, signature), so sharing the answer changes
    no outcome; the CPU model still charges every replica for its own verification. A
    `Keyring` that signs also records its own signatures as valid (`Keyring.sign` says why
    that is the answer verifying gives). Bounded: cleared when full.
    """

    limit: int = 200_000
    results: dict[bytes, bool] = field(default_factory=dict)
    session_keys: dict[tuple[tuple[bytes, str], tuple[bytes, str]], bytes] = field(
        default_factory=dict)
    """Pairwise MAC keys by the two ends' (public key, id), sorted: ECDH gives both ends the
    same secret, so in one process each pair's key is derived once, not twice."""

    sealed_limit: int = 16_384
    sealed: dict[bytes, tuple[bytes, str, bytes]] = field(default_factory=dict)
    """Messages sealed in this process and not yet opened: the exact bytes of a sealed message
    (an envelope) -> (the session key its MAC was computed under, its sender, its payload)
    (`Keyring.remember_sealed`). A receiver holding that key for that sender would compute
    that MAC, and would read that sender and payload from the bytes: `Keyring.open_sealed`
    answers from here, taking the entry. An entry lives until its message is opened, so the
    dict holds the messages in flight; cleared when full (messages lost on the way leave
    theirs), and a message that misses is opened and checked as a real node does."""

    def get(self, key: bytes) -> bool | None:
        return self.results.get(key)

    def put(self, key: bytes, ok: bool) -> None:
        if len(self.results) >= self.limit:
            self.results.clear()
        self.results[key] = ok


class Keyring:
    """What one party knows: its identity, everyone's public keys, pairwise MAC keys."""

    def __init__(
        self,
        identity: Identity,
        public_keys: dict[str, bytes],
        costs: Costs | None = None,
        verify_cache: VerifyCache | None = None,
    ) -> None:
        self.identity = identity
        self.costs = costs if costs is not None else Costs()
        self._public_bytes = dict(public_keys)
        self._public: dict[str, ec.EllipticCurvePublicKey] = {}
        self._mac_keys: dict[str, bytes] = {}
        # party -> a keyed BLAKE2b object that has absorbed nothing yet: a MAC copies it
        # instead of keying a new one (the key block is compressed once per party, not once
        # per message); the tags are the same.
        self._mac_bases: dict[str, blake2b] = {}
        self._verify_cache = verify_cache
        self._my_public = identity.public_bytes

    @property
    def id(self) -> str:
        return self.identity.id

    def knows(self, party: str) -> bool:
        return party in self._public_bytes

    # -- signatures ---------------------------------------------------------------------------

    def sign(self, data: bytes) -> bytes:
        """Sign `data` with our key; 64-byte r||s.

        With a shared `VerifyCache` (a simulation: every party in one process), the signer
        also records that this signature verifies under its own public key, so no party of
        the process computes that verification again: an ECDSA signature made with a private
        key always verifies under the public key derived from it (`Identity.public_bytes`),
        so the recorded answer is the one verifying would give. The entry is keyed, as every
        cached check is, by that public key, the signature and the exact bytes: a verifier
        that holds another key for us, a changed byte, or another party's name misses it and
        verifies for real. The CPU model still charges each verifier (`Costs.verify`)."""
        self.costs.sign += 1
        der = self.identity.private_key.sign(data, _ECDSA)
        r, s = decode_dss_signature(der)
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        if self._verify_cache is not None:
            self._verify_cache.put(_check_key(self._my_public, signature, data), True)
        return signature

    def verify(self, party: str, data: bytes, signature: bytes) -> bool:
        """True when `signature` is `party`'s signature of `data`; False for anything else."""
        self.costs.verify += 1
        pub = self._public_bytes.get(party)
        if pub is None or len(signature) != SIGNATURE_BYTES:
            return False
        cache_key = b""
        if self._verify_cache is not None:
            cache_key = _check_key(pub, signature, data)
            cached = self._verify_cache.get(cache_key)
            if cached is not None:
                return cached
        ok = self._verify_uncached(party, pub, data, signature)
        if self._verify_cache is not None:
            self._verify_cache.put(cache_key, ok)
        return ok

    def verify_signed(self, party: str, signed: RemembersChecks) -> bool:
        """verify(party, signed.unsigned(), signed.signature), remembered on `signed` with the
        public key we hold for `party` (`RemembersChecks`): a second check of the same object
        under the same key takes the answer, still counted (`Costs.verify`). Replicas of a
        simulation share decoded messages, so the first backup to check a PRE-PREPARE's
        requests answers for the others; a party holding another key checks for itself."""
        pub = self._public_bytes.get(party)
        checked = signed.checked_under(pub)
        if checked is not None:
            self.costs.verify += 1
            return checked
        ok = self.verify(party, signed.unsigned(), signed.signature)
        signed.remember_check(pub, ok)
        return ok

    def _verify_uncached(self, party: str, pub: bytes, data: bytes, signature: bytes) -> bool:
        key = self._public.get(party)
        if key is None:
            try:
                key = public_key_from_bytes(pub)
            except ValueError:
                return False
            self._public[party] = key
        r = int.from_bytes(signature[:32], "big")
        s = int.from_bytes(signature[32:], "big")
        if not (0 < r < _ORDER and 0 < s < _ORDER):
            return False
        try:
            key.verify(encode_dss_signature(r, s), data, _ECDSA)
        except InvalidSignature:
            return False
        return True

    # -- MACs ---------------------------------------------------------------------------------

    def _mac_key(self, party: str) -> bytes | None:
        key = self._mac_keys.get(party)
        if key is None:
            pub = self._public_bytes.get(party)
            if pub is None:
                return None
            cache = self._verify_cache
            ends = ((pub, party), (self._my_public, self.id))
            pair = (min(ends), max(ends))
            key = cache.session_keys.get(pair) if cache is not None else None
            if key is None:
                try:
                    peer = public_key_from_bytes(pub)
                except ValueError:
                    return None
                shared = self.identity.private_key.exchange(ec.ECDH(), peer)
                lo, hi = sorted((self.id, party))
                info = b"medbft-session|" + lo.encode() + b"|" + hi.encode()
                key = HKDF(hashes.SHA256(), 32, None, info).derive(shared)
                if cache is not None:
                    cache.session_keys[pair] = key
            self._mac_keys[party] = key
            self._mac_bases[party] = blake2b(key=key, digest_size=MAC_BYTES)
        return key

    def _mac_base(self, party: str) -> blake2b | None:
        """The keyed base for `party` on first use (its session key derived then); None for
        a party without a public key. Callers look in `_mac_bases` first."""
        return None if self._mac_key(party) is None else self._mac_bases[party]

    def mac(self, party: str, data: bytes) -> bytes:
        """The MAC of `data` under the session key shared with `party` (keyed BLAKE2b,
        32 bytes)."""
        self.costs.mac += 1
        base = self._mac_bases.get(party) or self._mac_base(party)
        if base is None:
            raise KeyError(f"no public key for {party!r}")
        h = base.copy()
        h.update(data)
        return h.digest()

    def macs(self, parties: tuple[str, ...], data: bytes) -> list[bytes]:
        """[mac(p, data) for p in parties]: the MACs of one multicast, in one call."""
        self.costs.mac += len(parties)
        bases = self._mac_bases
        tags = []
        for party in parties:
            base = bases.get(party) or self._mac_base(party)
            if base is None:
                raise KeyError(f"no public key for {party!r}")
            h = base.copy()
            h.update(data)
            tags.append(h.digest())
        return tags

    @property
    def seals(self) -> bool:
        """Whether sealed messages are remembered (a simulation's shared `VerifyCache`)."""
        return self._verify_cache is not None

    def remember_sealed(self, parties: tuple[str, ...], messages: tuple[bytes, ...],
                        sender: str, payload: bytes) -> None:
        """Note that each of `messages` is an envelope from `sender` carrying `payload` and the
        MAC computed here (`mac`, `macs`) for the party at the same position, over exactly the
        bytes that party's check covers (the caller's guarantee: node.pbft.outbox seals every
        replica message this way). Nothing without a shared `VerifyCache` (a real node)."""
        cache = self._verify_cache
        if cache is None:
            return
        sealed = cache.sealed
        if len(sealed) + len(parties) > cache.sealed_limit:
            sealed.clear()
        if len(parties) != len(messages):
            raise ValueError("one message per party")
        keys = self._mac_keys
        for i in range(len(parties)):  # indexed: compiled, zip(..., strict=True) is a call
            sealed[messages[i]] = (keys[parties[i]], sender, payload)

    def open_sealed(self, message: bytes) -> tuple[str, bytes] | None:
        """(sender, payload) of `message` when it was sealed in this process
        (`remember_sealed`) by that sender for us: its MAC was computed under the session key
        we hold for the sender, so the check `check_mac` would make over its bytes holds, and
        the sender and payload are what reading the envelope gives. The caller counts the MAC
        check (`Costs.mac`). None otherwise (not sealed here, for another receiver, already
        opened, or no shared cache): the caller reads and checks the message itself."""
        cache = self._verify_cache
        if cache is None or type(message) is not bytes:
            return None
        sealed = cache.sealed
        record = sealed.get(message)  # get and del: compiled, dict.pop is a method call
        if record is None:
            return None
        del sealed[message]
        if record[0] != self._mac_keys.get(record[1]):
            return None
        return record[1], record[2]

    def check_mac(self, party: str, data: bytes, tag: bytes) -> bool:
        """True when `tag` is the MAC `party` would compute for us over `data`."""
        self.costs.mac += 1
        base = self._mac_bases.get(party) or self._mac_base(party)
        if base is None:
            return False
        h = base.copy()
        h.update(data)
        return hmac.compare_digest(h.digest(), tag)
