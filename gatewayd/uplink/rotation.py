"""Key rotation on the gateway (docs/uplink.md#key-rotation, docs/operations.md#key-rotation).

`gatewayd keygen --rotate` puts the next key beside the current one (`<signing_key>.next`). The daemon
then announces it in the next batch it builds, signed like every batch by the current key, and keeps
signing with the current key until the broker has acknowledged that batch: only then can the platform
have pinned the next key. From then on the next key signs. What was announced, in which epoch and at
which seq, is kept in the store's state (`key_rotation`), so a restart neither announces twice nor
switches early; a new epoch (a reset forgets unacknowledged batches) announces again. The daemon runs
with /etc read-only, so it never renames key files: the second `gatewayd keygen --rotate` does, once
the state says the announcement was acknowledged.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core.batchformat import KEY_ROTATION, key_id, raw_public_key
from core.types import Event, Priority
from store import Store, read_state

log = logging.getLogger("gatewayd.uplink")

STATE = "key_rotation"


class KeyRotation:
    """Which key signs now, and whether the next one must be announced or awaits its acknowledgement."""

    def __init__(self, store: Store, current: Ed25519PrivateKey, next_key: Ed25519PrivateKey | None) -> None:
        self.store, self.signer, self.next = store, current, next_key
        self.began_with_next = next_key is not None  # a reload looks: was the next key there at the start?
        self.awaiting: int | None = None  # the seq of the batch carrying the announcement, until its PUBACK
        if next_key is None:
            return
        head, state = store.chain_head(), json.loads(store.load_state(STATE) or "null")
        if not state or state["next"] != key_id(next_key.public_key()).hex() or state["epoch"] != head.epoch.hex():
            return  # not announced yet in this epoch
        if state["acknowledged"] or state["seq"] not in {batch.seq for batch in store.pending_batches()}:
            self._save(state["seq"], acknowledged=True)  # acknowledged before the last stop
            self._switch(state["seq"])
        else:
            self.awaiting = state["seq"]

    def announcement(self, gateway_id: str) -> Event | None:
        """The key_rotation event for the next batch, while the next key waits to be announced."""
        if self.next is None or self.awaiting is not None:
            return None
        public = self.next.public_key()
        return Event(KEY_ROTATION, time.time(), gateway_id, f"{gateway_id} announces its next signing key "
                     f"{key_id(public).hex()}", Priority.LOW,
                     {"next_public_key": raw_public_key(public).hex(), "next_key_id": key_id(public).hex()})

    def announced(self, seq: int) -> None:
        """The batch `seq` carrying the announcement is stored: wait for its acknowledgement."""
        self.awaiting = seq
        self._save(seq, acknowledged=False)
        log.info("announced the next signing key %s in batch %d; switching once the broker acknowledges it",
                 key_id(self.next.public_key()).hex(), seq)

    def acknowledged(self, seq: int) -> None:
        if seq == self.awaiting:
            self._save(seq, acknowledged=True)
            self._switch(seq)

    def _save(self, seq: int, acknowledged: bool) -> None:
        self.store.save_state(STATE, json.dumps({"next": key_id(self.next.public_key()).hex(), "seq": seq,
                                                 "epoch": self.store.chain_head().epoch.hex(),
                                                 "acknowledged": acknowledged}))

    def _switch(self, seq: int) -> None:
        self.signer, self.next, self.awaiting = self.next, None, None
        log.warning("key rotation acknowledged (batch %d): signing with the next key, fingerprint %s; finish with "
                    "`gatewayd keygen --rotate` to remove the old key", seq, key_id(self.signer.public_key()).hex())


def read_acknowledged(store_path: Path) -> str | None:
    """The fingerprint of the next key whose announcement the broker acknowledged, from the daemon's store."""
    state = json.loads(read_state(store_path, STATE) or "null")
    return state["next"] if state and state["acknowledged"] else None
