"""Failed logins counted per username and per client address; too many in a window lock the key for a while.

Only failures count: one address may log many users in (the load generator does). A lock refuses every login
for the key, the right password included, so guessing learns nothing while it lasts; each further lock of the
same key lasts twice as long, up to a maximum. State lives in the process (auth runs one worker), behind a lock,
and is bounded: at most `max_keys` keys per scope, the least recently failed forgotten first, and a key quiet
for twice the longest lockout forgotten altogether.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Limits:
    max_failures: int  # failures within window_s that lock the key
    window_s: float
    lockout_s: float  # the first lock; each further one doubles
    max_lockout_s: float
    max_keys: int


@dataclass
class _Record:
    failures: deque[float]
    last_failure: float = 0.0
    locked_until: float = 0.0
    locks: int = 0


@dataclass
class FailureCounter:
    """Failed logins of one scope (usernames or addresses)."""

    limits: Limits
    clock: Callable[[], float] = time.monotonic
    _records: OrderedDict[str, _Record] = field(default_factory=OrderedDict)  # least recently failed first
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def retry_after(self, key: str) -> float:
        """Seconds until `key` may try again (0 when it is not locked)."""
        with self._lock:
            record = self._records.get(key)
            return max(0.0, record.locked_until - self.clock()) if record else 0.0

    def failed(self, key: str) -> tuple[int, float]:
        """Count a failure: (failures within the window, the lock it started in seconds or 0)."""
        limits = self.limits
        with self._lock:
            now = self.clock()
            self._forget_quiet(now)
            record = self._records.pop(key, None) or _Record(deque(maxlen=limits.max_failures))
            self._records[key] = record  # now the most recent
            while len(self._records) > limits.max_keys:
                self._records.popitem(last=False)
            record.last_failure = now
            record.failures.append(now)
            while record.failures and now - record.failures[0] > limits.window_s:
                record.failures.popleft()
            recent = len(record.failures)
            if recent < limits.max_failures:
                return recent, 0.0
            lockout = min(limits.max_lockout_s, limits.lockout_s * 2**record.locks)
            record.locks += 1
            record.locked_until = now + lockout
            record.failures.clear()
            return recent, lockout

    def forget(self, key: str) -> None:
        with self._lock:
            self._records.pop(key, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)

    def _forget_quiet(self, now: float) -> None:
        # Ordered by last failure, so the quiet ones are at the front. A lock ends at most max_lockout_s after the
        # failure that started it; a key is forgotten (its next lock the shortest again) only once it has stayed
        # quiet for as long again after that.
        quiet_s = max(self.limits.window_s, 2 * self.limits.max_lockout_s)
        while self._records:
            oldest = next(iter(self._records.values()))
            if now - oldest.last_failure < quiet_s:
                return
            self._records.popitem(last=False)


@dataclass(frozen=True)
class Verdict:
    recent_failures: int  # the username's failures within the window, this one included
    locked: tuple[tuple[str, float], ...]  # (scope, seconds) of each lock this failure started


class LoginThrottle:
    """The two scopes a login is counted in: its username and the address it came from."""

    def __init__(self, per_user: Limits, per_address: Limits, clock: Callable[[], float] = time.monotonic) -> None:
        self.users = FailureCounter(per_user, clock)
        self.addresses = FailureCounter(per_address, clock)

    def retry_after(self, username: str, address: str) -> int:
        """Whole seconds until this username may log in from this address (0: now)."""
        seconds = max(self.users.retry_after(username), self.addresses.retry_after(address))
        return math.ceil(seconds)

    def failed(self, username: str, address: str) -> Verdict:
        recent, user_lock = self.users.failed(username)
        _, address_lock = self.addresses.failed(address)
        locked = tuple((scope, s) for scope, s in (("username", user_lock), ("address", address_lock)) if s)
        return Verdict(recent, locked)

    def succeeded(self, username: str) -> None:
        """The user knew the password: their count starts afresh (the address's does not: one account an attacker
        owns must not reset the count of the guesses made from their address)."""
        self.users.forget(username)
