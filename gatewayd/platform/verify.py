"""Receiver-side checking of a stream of batches: signatures, sequence and hash chain.

Feed envelopes in arrival order; each `feed` returns what it noticed, and `report` sums up.
MQTT QoS 1 may deliver a batch twice and a gateway republishes unacknowledged batches after a
restart, so duplicates are expected and harmless; what matters is that every seq from the
first to the last is present, signed by the gateway's key, and chained to its predecessor.

    verifier = ChainVerifier(load_public_key(Path("signing.key.pub")), gateway_id="gw-1")
    for frame in read_frames(Path("capture.bin")):
        verifier.feed(frame)
    print(verifier.report().format())
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from core.batchformat import (
    BatchFormatError,
    Envelope,
    decode_body,
    parse_envelope,
    verify_signature,
)

ZERO_HASH = bytes(32)


class Kind(enum.Enum):
    """What a finding is about; `serious` ones make the report not ok."""

    MALFORMED = ("malformed", True)
    BAD_SIGNATURE = ("bad signature", True)
    WRONG_GATEWAY = ("wrong gateway", True)
    CONFLICT = ("conflict", True)
    CHAIN_BREAK = ("chain break", True)
    GAP = ("gap", True)
    DUPLICATE = ("duplicate", False)
    OUT_OF_ORDER = ("out of order", False)
    NEW_BOOT = ("new boot", False)

    def __init__(self, label: str, serious: bool) -> None:
        self.label = label
        self.serious = serious


@dataclass(frozen=True)
class Finding:
    kind: Kind
    seq: int | None
    detail: str

    def format(self) -> str:
        where = f"seq {self.seq}" if self.seq is not None else "-"
        return f"{'ERROR' if self.kind.serious else 'note '} {where}: {self.kind.label}: {self.detail}"

    __str__ = format


@dataclass(frozen=True)
class Accepted:
    """A batch that passed every check, with its decoded body."""

    seq: int
    boot_id: bytes
    created_ms: int
    digest: bytes
    body: dict


@dataclass
class Report:
    frames: int = 0
    batches_accepted: int = 0
    samples: int = 0
    events: int = 0
    duplicates: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    boot_ids: list[bytes] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    batches: list[Accepted] = field(default_factory=list)  # in seq order

    def count(self, kind: Kind) -> int:
        return sum(1 for f in self.findings if f.kind is kind)

    @property
    def ok(self) -> bool:
        """At least one batch, and no gap, bad signature, malformation, conflict or chain break."""
        return self.batches_accepted > 0 and not any(f.kind.serious for f in self.findings)

    def format(self) -> str:
        span = f"seq {self.first_seq}..{self.last_seq}" if self.batches_accepted else "no batches"
        lines = [
            f"{'OK' if self.ok else 'NOT OK'}: {self.batches_accepted} batches accepted ({span}) "
            f"from {self.frames} frames, {self.samples} samples, {self.events} events, "
            f"{self.duplicates} duplicates, {len(self.boot_ids)} boot ids",
        ]
        lines += [f"  {finding.format()}" for finding in self.findings]
        return "\n".join(lines)


class ChainVerifier:
    """Check batches from one gateway against its public key.

    The gateway is `gateway_id` when given, else the one named by the first well-formed frame; frames
    of any other gateway (say, on a wildcard topic) are findings, never mixed into this chain.
    """

    def __init__(self, public_key: Ed25519PublicKey, gateway_id: str | None = None) -> None:
        self._key = public_key
        self._gateway_id = gateway_id
        self._accepted: dict[int, Accepted] = {}
        self._prev: dict[int, bytes] = {}  # seq -> prev_hash it claimed
        self._findings: list[Finding] = []
        self._boot_ids: list[bytes] = []
        self._frames = 0
        self._duplicates = 0

    @property
    def gateway_id(self) -> str | None:
        """The gateway whose chain this is, once known."""
        return self._gateway_id

    def feed(self, data: bytes) -> list[Finding]:
        """Check one envelope in arrival order; return the findings it caused."""
        self._frames += 1
        found = self._check(data)
        self._findings += found
        return found

    def _check(self, data: bytes) -> list[Finding]:
        try:
            envelope = parse_envelope(data)
        except BatchFormatError as exc:
            return [Finding(Kind.MALFORMED, None, str(exc))]
        seq = envelope.seq
        if self._gateway_id is None:
            self._gateway_id = envelope.gateway_id  # one key is one gateway: the first frame names it
        if envelope.gateway_id != self._gateway_id:
            return [Finding(Kind.WRONG_GATEWAY, seq, f"from {envelope.gateway_id!r}, expected {self._gateway_id!r}")]
        if not verify_signature(envelope, self._key):
            return [Finding(Kind.BAD_SIGNATURE, seq, "signature does not verify with the key")]
        if seq in self._accepted:
            return [self._duplicate(envelope)]
        try:
            body = decode_body(envelope)
        except BatchFormatError as exc:
            return [Finding(Kind.MALFORMED, seq, f"signed batch with a bad body: {exc}")]
        found = []
        if self._accepted and seq < max(self._accepted):
            found.append(Finding(Kind.OUT_OF_ORDER, seq, f"arrived after seq {max(self._accepted)}"))
        if envelope.boot_id not in self._boot_ids:
            self._boot_ids.append(envelope.boot_id)
            found.append(Finding(Kind.NEW_BOOT, seq, f"boot id {envelope.boot_id.hex()}"))
        self._accepted[seq] = Accepted(seq, envelope.boot_id, envelope.created_ms, envelope.digest, body)
        self._prev[seq] = envelope.prev_hash
        found += self._chain(seq)
        found += self._chain(seq + 1)
        return found

    def _duplicate(self, envelope: Envelope) -> Finding:
        if envelope.digest == self._accepted[envelope.seq].digest:
            self._duplicates += 1
            return Finding(Kind.DUPLICATE, envelope.seq, "identical bytes delivered again")
        return Finding(
            Kind.CONFLICT, envelope.seq, "different batch with an already accepted seq (kept the first)"
        )

    def _chain(self, seq: int) -> list[Finding]:
        """Check that batch `seq` names batch seq-1 as its predecessor, when both are here."""
        if seq not in self._accepted:
            return []
        claimed = self._prev[seq]
        if seq == 1:
            expected = ZERO_HASH
        elif seq - 1 in self._accepted:
            expected = self._accepted[seq - 1].digest
        else:
            return []
        if claimed == expected:
            return []
        return [
            Finding(
                Kind.CHAIN_BREAK,
                seq,
                f"prev hash {claimed.hex()[:16]}.. does not match seq {seq - 1} ({expected.hex()[:16]}..)",
            )
        ]

    def _gaps(self) -> list[Finding]:
        seqs = sorted(self._accepted)
        found = []
        for low, high in zip(seqs, seqs[1:]):
            if high - low > 1:
                missing = f"{low + 1}" if high - low == 2 else f"{low + 1}..{high - 1}"
                found.append(Finding(Kind.GAP, low + 1, f"missing seq {missing} ({high - low - 1} batches)"))
        return found

    def report(self) -> Report:
        """Counts, all findings (gaps still open at this point included) and accepted bodies."""
        batches = [self._accepted[seq] for seq in sorted(self._accepted)]
        return Report(
            frames=self._frames,
            batches_accepted=len(batches),
            samples=sum(len(b.body["samples"]["ts"]) for b in batches),
            events=sum(len(b.body["events"]) for b in batches),
            duplicates=self._duplicates,
            first_seq=batches[0].seq if batches else None,
            last_seq=batches[-1].seq if batches else None,
            boot_ids=list(self._boot_ids),
            findings=self._findings + self._gaps(),
            batches=batches,
        )
