"""Receiver-side checking of a stream of batches: signatures, keys, epochs, sequence and hash chain.

Feed payloads (batches and heartbeats, protocol 1.0 or 1.1) in arrival order; each `feed` returns what
it noticed, and `report` sums up. The rules are docs/uplink.md's "Verifying a stream, step by step",
and the finding names are the bold words there. MQTT QoS 1 may deliver a batch twice and a gateway
republishes unacknowledged batches after a restart, so duplicates are expected and harmless; what
matters is that in every epoch every seq from the first (or the anchor of a late start) to the head
is present, signed by a key pinned for the gateway, and chained to its predecessor.

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
    CHAIN_RESET,
    KEY_ROTATION,
    VERSION_1_0,
    ZERO_EPOCH,
    ZERO_HASH,
    BatchFormatError,
    Envelope,
    decode_body,
    key_id,
    parse_envelope,
    verify_signature,
)


CONTROL_KINDS = (CHAIN_RESET, KEY_ROTATION)  # the protocol's own events: counted apart from the plant's


class Kind(enum.Enum):
    """What a finding is about; `serious` ones make the report not ok."""

    MALFORMED = ("malformed", True)
    BAD_SIGNATURE = ("bad signature", True)
    WRONG_GATEWAY = ("wrong gateway", True)
    UNKNOWN_KEY = ("unknown key", True)
    RETIRED_KEY = ("retired key", True)
    CONFLICT = ("conflict", True)
    UNDECODABLE = ("undecodable", True)
    CHAIN_BREAK = ("chain break", True)
    GAP = ("gap", True)
    REPLAYED_RESET = ("replayed reset", True)
    RESET_MISMATCH = ("reset mismatch", True)
    UNANCHORED_EPOCH = ("unanchored epoch", True)
    DUPLICATE = ("duplicate", False)
    LATE_ARRIVAL = ("late arrival", False)
    NEW_BOOT = ("new boot", False)
    LATE_START = ("late start", False)
    CHAIN_RESET = ("chain reset", False)
    KEY_ROTATION = ("key rotation", False)
    STALE_HEARTBEAT = ("stale heartbeat", False)

    def __init__(self, label: str, serious: bool) -> None:
        self.label = label
        self.serious = serious


@dataclass(frozen=True)
class Finding:
    kind: Kind
    seq: int | None
    detail: str
    epoch: bytes = ZERO_EPOCH

    def format(self) -> str:
        where = f"seq {self.seq}" if self.seq is not None else "-"
        if self.epoch != ZERO_EPOCH:
            where = f"epoch {self.epoch.hex()[:8]} {where}"
        return f"{'ERROR' if self.kind.serious else 'note '} {where}: {self.kind.label}: {self.detail}"

    __str__ = format


@dataclass(frozen=True)
class Accepted:
    """A batch that is part of the chain, with its decoded body (None when it was undecodable)."""

    seq: int
    boot_id: bytes
    created_ms: int
    digest: bytes
    body: dict | None
    epoch: bytes = ZERO_EPOCH
    key_id: bytes = b""


@dataclass
class EpochState:
    """What the receiver knows of one epoch of the gateway's chain."""

    epoch: bytes
    accepted: dict[int, Accepted] = field(default_factory=dict)
    prev: dict[int, bytes] = field(default_factory=dict)  # seq -> prev_hash it claimed
    reset_reason: str | None = None  # from its chain_reset; None for the first epoch seen without one
    anchor: tuple[int, bytes] | None = None  # (seq, hash) of a heartbeat a late start began at
    head: tuple[int, bytes] | None = None  # (seq, hash) of the latest heartbeat
    oldest_unacknowledged: int | None = None
    newest_created_ms: int | None = None
    first_seq_by_key: dict[bytes, int] = field(default_factory=dict)

    def gaps(self) -> list[tuple[int, int]]:
        """Missing seq ranges [low, high] from the first accepted (or the anchor + 1) to the head."""
        seqs = sorted(self.accepted)
        low = [seqs[0]] if seqs else []
        high = [seqs[-1]] if seqs else []
        if self.anchor is not None:
            low.append(self.anchor[0] + 1)
        if self.head is not None:
            high.append(self.head[0])
        if not low or not high:
            return []
        ranges, start = [], None
        for seq in range(min(low), max(high) + 1):
            if seq not in self.accepted and start is None:
                start = seq
            elif seq in self.accepted and start is not None:
                ranges.append((start, seq - 1))
                start = None
        if start is not None:
            ranges.append((start, max(high)))
        return ranges


@dataclass
class Report:
    frames: int = 0
    batches_accepted: int = 0
    samples: int = 0
    events: int = 0  # the plant's, without the protocol's chain_reset and key_rotation events
    duplicates: int = 0
    heartbeats: int = 0
    first_seq: int | None = None  # of the current epoch
    last_seq: int | None = None
    boot_ids: list[bytes] = field(default_factory=list)
    epochs: list[EpochState] = field(default_factory=list)  # in the order they became known
    keys: list[bytes] = field(default_factory=list)  # ids of the keys pinned, in order
    findings: list[Finding] = field(default_factory=list)
    batches: list[Accepted] = field(default_factory=list)  # by epoch, then seq

    def count(self, kind: Kind) -> int:
        return sum(1 for f in self.findings if f.kind is kind)

    @property
    def ok(self) -> bool:
        """At least one batch, and no serious finding (gap, bad signature, conflict, chain break, ...)."""
        return self.batches_accepted > 0 and not any(f.kind.serious for f in self.findings)

    def format(self) -> str:
        span = f"seq {self.first_seq}..{self.last_seq}" if self.first_seq is not None else "no batches"
        epochs = f" in {len(self.epochs)} epochs" if len(self.epochs) > 1 else ""
        lines = [
            f"{'OK' if self.ok else 'NOT OK'}: {self.batches_accepted} batches accepted{epochs} ({span}) "
            f"from {self.frames} frames, {self.samples} samples, {self.events} events, "
            f"{self.duplicates} duplicates, {len(self.boot_ids)} boot ids, {self.heartbeats} heartbeats",
        ]
        for state in self.epochs:
            head = f"heartbeat head seq {state.head[0]}" if state.head else "no heartbeat"
            reason = f", begun by chain_reset ({state.reset_reason})" if state.reset_reason else ""
            lines.append(f"  epoch {state.epoch.hex()}: {len(state.accepted)} batches, {head}{reason}")
        lines.append(f"  keys pinned: {', '.join(k.hex() for k in self.keys)}")
        lines += [f"  {finding.format()}" for finding in self.findings]
        return "\n".join(lines)


class ChainVerifier:
    """Check payloads from one gateway, trusting `public_key` (the one pinned at enrolment) and the keys it
    announces.

    The gateway is `gateway_id` when given, else the one named by the first well-formed frame; frames
    of any other gateway (say, on a wildcard topic) are findings, never mixed into this chain.
    """

    def __init__(self, public_key: Ed25519PublicKey, gateway_id: str | None = None) -> None:
        self._enrolled = public_key
        self._keys: dict[bytes, Ed25519PublicKey] = {key_id(public_key): public_key}
        self._successor: dict[bytes, bytes] = {}  # key id -> the key id it announced
        self._gateway_id = gateway_id
        self._epochs: dict[bytes, EpochState] = {}
        self._current: bytes | None = None
        self._held: list[tuple[Kind, bytes]] = []  # payloads waiting for a key or an epoch's reset
        self._last_heartbeat: dict[bytes, int] = {}  # boot id -> created_ms
        self._findings: list[Finding] = []
        self._boot_ids: list[bytes] = []
        self._frames = 0
        self._duplicates = 0
        self._heartbeats = 0

    @property
    def gateway_id(self) -> str | None:
        """The gateway whose chain this is, once known."""
        return self._gateway_id

    def feed(self, data: bytes) -> list[Finding]:
        """Check one payload in arrival order; return the findings it caused (and any it released)."""
        self._frames += 1
        found = self._check(data)
        self._findings += found
        return found

    def _check(self, data: bytes) -> list[Finding]:
        try:
            envelope = parse_envelope(data)
        except BatchFormatError as exc:
            return [Finding(Kind.MALFORMED, None, str(exc))]
        seq, epoch = envelope.seq, envelope.epoch
        if self._gateway_id is None:
            self._gateway_id = envelope.gateway_id  # one key is one gateway: the first frame names it
        if envelope.gateway_id != self._gateway_id:
            return [Finding(Kind.WRONG_GATEWAY, seq, f"from {envelope.gateway_id!r}, expected {self._gateway_id!r}",
                            epoch)]
        key = self._enrolled if envelope.version == VERSION_1_0 else self._keys.get(envelope.key_id)
        if key is None:
            self._held.append((Kind.UNKNOWN_KEY, envelope.raw))
            return []
        if not verify_signature(envelope, key):
            return [Finding(Kind.BAD_SIGNATURE, seq, "signature does not verify with the key", epoch)]
        if envelope.is_heartbeat:
            return self._heartbeat(envelope)
        return self._batch(envelope)

    def _heartbeat(self, envelope: Envelope) -> list[Finding]:
        seq, epoch = envelope.seq, envelope.epoch
        try:
            body = decode_body(envelope)
        except BatchFormatError as exc:
            return [Finding(Kind.MALFORMED, seq, f"signed heartbeat with a bad body: {exc}", epoch)]
        self._heartbeats += 1
        found = []
        if self._current is None:
            self._current = epoch
            self._epochs[epoch] = EpochState(epoch, anchor=(seq, envelope.prev_hash))
            found.append(Finding(Kind.LATE_START, seq, "anchored at a heartbeat's head", epoch))
        last = self._last_heartbeat.get(envelope.boot_id)
        if epoch != self._current or (last is not None and envelope.created_ms <= last):
            return found + [Finding(Kind.STALE_HEARTBEAT, seq, "of another epoch or not newer than the last", epoch)]
        self._last_heartbeat[envelope.boot_id] = envelope.created_ms
        state = self._epochs[epoch]
        if state.head is None or seq >= state.head[0]:
            state.head = (seq, envelope.prev_hash)
            state.oldest_unacknowledged = body["oldest_unacknowledged"]
        held = state.accepted.get(seq)
        if held is not None and held.digest != envelope.prev_hash:
            found.append(Finding(Kind.CHAIN_BREAK, seq, "the heartbeat's head hash is not that batch's hash", epoch))
        return found

    def _batch(self, envelope: Envelope) -> list[Finding]:
        seq, epoch = envelope.seq, envelope.epoch
        state = self._epochs.get(epoch)
        body, found = None, []
        if state is None:
            begins = seq == 1 and epoch != ZERO_EPOCH
            if begins:
                try:
                    body = decode_body(envelope)
                except BatchFormatError as exc:
                    return [Finding(Kind.MALFORMED, seq, f"first batch of an epoch with a bad body: {exc}", epoch)]
                refused = self._replayed_reset(envelope)
                if refused:
                    return refused
            elif self._current is not None and epoch != ZERO_EPOCH:
                self._held.append((Kind.UNANCHORED_EPOCH, envelope.raw))
                return []
            state = self._epochs[epoch] = EpochState(epoch)
            if begins or self._current is None:
                self._current = epoch
        if seq in state.accepted:
            return [self._duplicate(state, envelope)]
        if envelope.version != VERSION_1_0 and self._retired(state, envelope.key_id, seq):
            return [Finding(Kind.RETIRED_KEY, seq, f"signed by key {envelope.key_id.hex()}, which its successor "
                            "replaced at a lower seq", epoch)]
        if body is None:
            try:
                body = decode_body(envelope)
            except BatchFormatError as exc:
                found.append(Finding(Kind.UNDECODABLE, seq, f"signed batch with a bad body, kept in the chain: {exc}",
                                     epoch))
        if body is not None and seq == 1 and epoch != ZERO_EPOCH and state.reset_reason is None:
            found += self._reset(state, envelope, body)
        if state.accepted and seq < max(state.accepted):
            found.append(Finding(Kind.LATE_ARRIVAL, seq, f"arrived after seq {max(state.accepted)}", epoch))
        if envelope.boot_id not in self._boot_ids:
            self._boot_ids.append(envelope.boot_id)
            found.append(Finding(Kind.NEW_BOOT, seq, f"boot id {envelope.boot_id.hex()}", epoch))
        state.accepted[seq] = Accepted(seq, envelope.boot_id, envelope.created_ms, envelope.digest, body, epoch,
                                       envelope.key_id)
        state.prev[seq] = envelope.prev_hash
        state.newest_created_ms = max(state.newest_created_ms or envelope.created_ms, envelope.created_ms)
        signer = envelope.key_id
        state.first_seq_by_key[signer] = min(state.first_seq_by_key.get(signer, seq), seq)
        found += self._chain(state, seq) + self._chain(state, seq + 1)
        if state.head is not None and state.head[0] == seq and state.head[1] != envelope.digest:
            found.append(Finding(Kind.CHAIN_BREAK, seq, "not the batch a heartbeat named as the head", epoch))
        if body is not None:
            found += self._rotations(envelope, body)
        if state.reset_reason is not None and seq == 1:
            found += self._release(Kind.UNANCHORED_EPOCH)
        return found

    def _replayed_reset(self, envelope: Envelope) -> list[Finding]:
        """A reset older than the newest batch of the current epoch is an old epoch's seq 1 sent again."""
        current = self._epochs.get(self._current) if self._current is not None else None
        newest = current.newest_created_ms if current else None
        if newest is not None and envelope.created_ms < newest:
            return [Finding(Kind.REPLAYED_RESET, envelope.seq, f"created {newest - envelope.created_ms} ms before "
                            "the newest batch of the current epoch", envelope.epoch)]
        return []

    def _reset(self, state: EpochState, envelope: Envelope, body: dict) -> list[Finding]:
        data = body["events"][0]["data"]
        state.reset_reason = data["reason"]
        found = [Finding(Kind.CHAIN_RESET, 1, f"new epoch, reason {data['reason']}; previous: epoch "
                         f"{data['previous_epoch']}, seq {data['previous_seq']}", envelope.epoch)]
        previous = self._epochs.get(bytes.fromhex(data["previous_epoch"])) if data["previous_epoch"] else None
        known = previous.accepted.get(data["previous_seq"]) if previous is not None else None
        if known is not None and known.digest.hex() != data["previous_hash"]:
            found.append(Finding(Kind.RESET_MISMATCH, 1, f"it names seq {data['previous_seq']} of epoch "
                                 f"{data['previous_epoch']} with another hash than the batch received", envelope.epoch))
        return found

    def _retired(self, state: EpochState, signer: bytes, seq: int) -> bool:
        successor, seen = self._successor.get(signer), {signer}
        while successor is not None and successor not in seen:
            if state.first_seq_by_key.get(successor, seq) < seq:
                return True
            seen.add(successor)
            successor = self._successor.get(successor)
        return False

    def _rotations(self, envelope: Envelope, body: dict) -> list[Finding]:
        found = []
        for event in body["events"]:
            if event["kind"] != KEY_ROTATION or envelope.version == VERSION_1_0:
                continue
            next_id = bytes.fromhex(event["data"]["next_key_id"])
            self._successor[envelope.key_id] = next_id
            if next_id not in self._keys:
                raw = bytes.fromhex(event["data"]["next_public_key"])
                self._keys[next_id] = Ed25519PublicKey.from_public_bytes(raw)
                found.append(Finding(Kind.KEY_ROTATION, envelope.seq, f"key {envelope.key_id.hex()} announced its "
                                     f"successor {next_id.hex()}, now pinned", envelope.epoch))
                found += self._release(Kind.UNKNOWN_KEY)
        return found

    def _release(self, reason: Kind) -> list[Finding]:
        """Look again at the payloads held for `reason`, in arrival order."""
        waiting = [data for why, data in self._held if why is reason]
        self._held = [(why, data) for why, data in self._held if why is not reason]
        found = []
        for data in waiting:
            found += self._check(data)
        return found

    def _duplicate(self, state: EpochState, envelope: Envelope) -> Finding:
        if envelope.digest == state.accepted[envelope.seq].digest:
            self._duplicates += 1
            return Finding(Kind.DUPLICATE, envelope.seq, "identical bytes delivered again", envelope.epoch)
        return Finding(Kind.CONFLICT, envelope.seq, "different batch with an already accepted seq (kept the first)",
                       envelope.epoch)

    def _chain(self, state: EpochState, seq: int) -> list[Finding]:
        """Check that batch `seq` names batch seq-1 (or the anchor, or zeros at 1) as its predecessor."""
        if seq not in state.accepted:
            return []
        claimed = state.prev[seq]
        if seq == 1:
            expected = ZERO_HASH
        elif seq - 1 in state.accepted:
            expected = state.accepted[seq - 1].digest
        elif state.anchor is not None and state.anchor[0] == seq - 1:
            expected = state.anchor[1]
        else:
            return []
        if claimed == expected:
            return []
        return [Finding(Kind.CHAIN_BREAK, seq, f"prev hash {claimed.hex()[:16]}.. does not match seq {seq - 1} "
                        f"({expected.hex()[:16]}..)", state.epoch)]

    def _open_findings(self) -> list[Finding]:
        """Gaps still open, and payloads still held, at this point."""
        found = []
        for state in self._epochs.values():
            for low, high in state.gaps():
                missing = f"{low}" if low == high else f"{low}..{high}"
                lost = state.oldest_unacknowledged is None or state.oldest_unacknowledged > high
                after = "; the gateway no longer holds them" if state.head and lost else ""
                found.append(Finding(Kind.GAP, low, f"missing seq {missing} ({high - low + 1} batches){after}",
                                     state.epoch))
        for why, data in self._held:
            envelope = parse_envelope(data)
            detail = (f"signed by key {envelope.key_id.hex()}, never announced" if why is Kind.UNKNOWN_KEY
                      else "a batch of an epoch whose chain_reset never arrived")
            found.append(Finding(why, envelope.seq, detail, envelope.epoch))
        return found

    def report(self) -> Report:
        """Counts, all findings (gaps and held payloads still open at this point included) and accepted batches."""
        epochs = list(self._epochs.values())
        batches = [state.accepted[seq] for state in epochs for seq in sorted(state.accepted)]
        decoded = [b.body for b in batches if b.body is not None]
        current = sorted(self._epochs[self._current].accepted) if self._current is not None else []
        return Report(
            frames=self._frames,
            batches_accepted=len(batches),
            samples=sum(len(body["samples"]["ts"]) for body in decoded),
            events=sum(1 for body in decoded for event in body["events"] if event["kind"] not in CONTROL_KINDS),
            duplicates=self._duplicates,
            heartbeats=self._heartbeats,
            first_seq=current[0] if current else None,
            last_seq=current[-1] if current else None,
            boot_ids=list(self._boot_ids),
            epochs=epochs,
            keys=list(self._keys),
            findings=self._findings + self._open_findings(),
            batches=batches,
        )
