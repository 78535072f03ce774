"""API keys: created once and shown once, stored only as a SHA-256 hash."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

import redis

from irq.broker import KEYS_REVOKED_CHANNEL, redis_client
from irq.clock import utcnow
from irq.store.db import Database
from irq.store.keys import find_key, insert_key, revoke_keys

KEY_PREFIX = "irq_"


@dataclass(frozen=True)
class Principal:
    """Who a request acts for."""

    key_id: int
    name: str
    is_admin: bool


def hash_key(key: str) -> str:
    # Keys are 256 random bits, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(db: Database, name: str, *, admin: bool = False) -> str:
    """Create a key and return it; this is the only time the key itself is known."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    insert_key(db, name=name, prefix=key[:10], key_hash=hash_key(key), admin=admin, now=utcnow())
    return key


def revoke(db: Database, redis_url: str, name_or_prefix: str) -> list[int]:
    """Revoke the keys with this name or prefix, and tell every API process at once (each also forgets
    what it cached after `KeyCache.ttl_s`, should the notice be lost)."""
    revoked = revoke_keys(db, name_or_prefix, utcnow())
    try:
        client = redis_client(redis_url)
        for key_id in revoked:
            client.publish(KEYS_REVOKED_CHANNEL, str(key_id))
        client.close()
    except redis.RedisError:
        pass  # the API processes' caches expire within ttl_s
    return revoked


class KeyCache:
    """Known keys for `ttl_s` seconds, so that most requests authenticate without a query. A revoked key
    is forgotten at once when its notice arrives (`forget`), within `ttl_s` at worst. Unknown keys are not
    remembered: random keys cannot fill it."""

    def __init__(self, db: Database, ttl_s: float = 10.0) -> None:
        self.db = db
        self.ttl_s = ttl_s
        self._known: dict[str, tuple[Principal, float]] = {}

    def cached(self, key: str) -> Principal | None:
        """The key's principal if it was found in the last `ttl_s` seconds; no query."""
        return self._fresh(hash_key(key))

    def authenticate(self, key: str) -> Principal | None:
        digest = hash_key(key)
        cached = self._fresh(digest)
        if cached is not None:
            return cached
        found = _lookup(self.db, digest)
        if found is not None:
            self._known[digest] = (found, time.monotonic() + self.ttl_s)
        else:
            self._known.pop(digest, None)
        return found

    def forget(self, key_id: int) -> None:
        for digest, (principal, _) in list(self._known.items()):
            if principal.key_id == key_id:
                self._known.pop(digest, None)

    def _fresh(self, digest: str) -> Principal | None:
        hit = self._known.get(digest)
        return hit[0] if hit is not None and hit[1] > time.monotonic() else None


def authenticate(db: Database, key: str) -> Principal | None:
    return _lookup(db, hash_key(key))


def _lookup(db: Database, digest: str) -> Principal | None:
    row = find_key(db, digest)
    return None if row is None else Principal(key_id=row.id, name=row.name, is_admin=row.is_admin)
