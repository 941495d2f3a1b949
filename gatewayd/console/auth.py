"""Who may read the console off loopback: password hashes in a file, throttled logins, session cookies.

The users file holds one line per user, `NAME:scrypt:N:R:P:SALT:HASH` (salt and hash in base64), made by
`gatewayd console-user`. scrypt (hashlib, RFC 7914) with N=2**15 costs about 32 MiB and tens of
milliseconds per guess, so a stolen file is slow to attack; the file is a secret all the same (mode 0600,
checked like every secret file, gatewayd.secretfiles).

A wrong password is refused after a fixed delay, and `LoginThrottle` counts the failures per client
address and per user name: past `login_failures` within `login_lockout`, every login from that address
or for that user is refused without looking at the password until the lockout ends. A session is a
random token (256 bits) in an HttpOnly, SameSite=Strict cookie (Secure over TLS) that ends after
`session_lifetime`; the console is read-only, so a session can read and nothing else. No password and no
token is ever logged: the log names the user and the address.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gatewayd.secretfiles import read_private

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
SCRYPT_MAXMEM = 64 * 1024 * 1024
HASH_BYTES = 32
USER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._@-]{0,63}")
COOKIE = "gatewayd_console"
MAX_SESSIONS = 256  # beyond it, the oldest session ends
MIN_PASSWORD = 12


class UsersFileError(ValueError):
    """The users file cannot be read or has a malformed line; the message names the file and line."""


def hash_password(password: str, salt: bytes | None = None) -> str:
    """`scrypt:N:R:P:SALT:HASH` of a password."""
    salt = os.urandom(16) if salt is None else salt
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                            maxmem=SCRYPT_MAXMEM, dklen=HASH_BYTES)
    return f"scrypt:{SCRYPT_N}:{SCRYPT_R}:{SCRYPT_P}:{_b64(salt)}:{_b64(digest)}"


def password_matches(stored: str, password: str) -> bool:
    """Whether `password` hashes to `stored` (compared in constant time)."""
    _, n, r, p, salt, digest = stored.split(":")
    expected = base64.b64decode(digest)
    actual = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                            maxmem=SCRYPT_MAXMEM, dklen=len(expected))
    return hmac.compare_digest(actual, expected)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


_LINE = re.compile(r"(?P<user>[^:]+):(?P<hash>scrypt:\d+:\d+:\d+:[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+)")


def parse_users(text: str, path: Path) -> dict[str, str]:
    """user -> stored hash; UsersFileError at the first malformed line."""
    users = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        match = _LINE.fullmatch(line.strip())
        if match is None or not USER_NAME.fullmatch(match["user"]):
            raise UsersFileError(f"{path}:{number}: not NAME:scrypt:N:R:P:SALT:HASH; write users with "
                                 f"`gatewayd console-user --file {path} NAME`")
        users[match["user"]] = match["hash"]
    return users


def read_users(path: Path) -> dict[str, str]:
    """The users file, refused when others may read it (gatewayd.secretfiles)."""
    return parse_users(read_private(path, "console users file").decode("utf-8", errors="replace"), path)


def write_user(path: Path, user: str, password: str) -> bool:
    """Add or replace `user` in the users file (created mode 0600); True when the user was new."""
    if not USER_NAME.fullmatch(user):
        raise UsersFileError(f"{user!r} is not a user name: letters, digits, '.', '_', '@' or '-', at most 64")
    if len(password) < MIN_PASSWORD:
        raise UsersFileError(f"the password is {len(password)} characters; at least {MIN_PASSWORD}")
    users = read_users(path) if path.exists() else {}
    new = user not in users
    users[user] = hash_password(password)
    temporary = path.with_name(path.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write("".join(f"{name}:{stored}\n" for name, stored in users.items()))
    os.replace(temporary, path)
    return new


class LoginThrottle:
    """Failures per address and per user name; past `failures` within `lockout` seconds, logins from the
    address or for the user are refused until `lockout` after the last failure."""

    def __init__(self, failures: int, lockout: float, clock: Callable[[], float] = time.monotonic):
        self.failures, self.lockout, self.clock = failures, lockout, clock
        self._recent: dict[str, list[float]] = {}

    def wait(self, address: str, user: str) -> float:
        """Seconds until a login from `address` for `user` is looked at again; 0 when it may be tried now."""
        now = self.clock()
        return max(self._wait(f"address {address}", now), self._wait(f"user {user}", now))

    def _wait(self, key: str, now: float) -> float:
        times = [at for at in self._recent.get(key, ()) if now - at < self.lockout]
        if times:
            self._recent[key] = times
        else:
            self._recent.pop(key, None)
        return self.lockout - (now - times[-1]) if len(times) >= self.failures else 0.0

    def failed(self, address: str, user: str) -> None:
        now = self.clock()
        for key in (f"address {address}", f"user {user}"):
            self._recent.setdefault(key, []).append(now)

    def succeeded(self, address: str, user: str) -> None:
        self._recent.pop(f"address {address}", None)
        self._recent.pop(f"user {user}", None)


@dataclass(frozen=True)
class Session:
    user: str
    expires: float


class Sessions:
    """Logged-in browsers by token."""

    def __init__(self, lifetime: float, clock: Callable[[], float] = time.monotonic):
        self.lifetime, self.clock = lifetime, clock
        self._by_token: dict[str, Session] = {}

    def open(self, user: str) -> str:
        now = self.clock()
        self._by_token = {token: session for token, session in self._by_token.items() if session.expires > now}
        while len(self._by_token) >= MAX_SESSIONS:
            del self._by_token[next(iter(self._by_token))]
        token = secrets.token_urlsafe(32)
        self._by_token[token] = Session(user, now + self.lifetime)
        return token

    def user(self, token: str | None) -> str | None:
        session = self._by_token.get(token) if token else None
        if session is None:
            return None
        if session.expires <= self.clock():
            del self._by_token[token]
            return None
        return session.user

    def close(self, token: str | None) -> None:
        if token:
            self._by_token.pop(token, None)


def cookie_header(token: str, lifetime: float, secure: bool) -> str:
    """Set-Cookie for a session: not readable by scripts, not sent by other sites, HTTPS-only over TLS."""
    return (f"{COOKIE}={token}; Path=/; Max-Age={int(lifetime)}; HttpOnly; SameSite=Strict"
            + ("; Secure" if secure else ""))


def expired_cookie_header(secure: bool) -> str:
    return f"{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict" + ("; Secure" if secure else "")
