"""API keys and their roles: parsing, and finding a presented key's role in constant time.

Pure: no grpc, no I/O. Only SHA-256 digests of the keys are kept in memory, and a lookup
compares the presented key's digest with every stored digest (`hmac.compare_digest`, no early
exit), so neither the keys nor the time a lookup takes tell an attacker anything.

One format everywhere: `ROLE:KEY`. A keys file holds one per line (blank lines and lines
starting with `#` are skipped); the GYOZA_API_KEYS variable holds them separated by commas.
A key is at least MIN_KEY_LENGTH visible ASCII characters, without commas.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

MIN_KEY_LENGTH = 16


class Role(StrEnum):
    ADMIN = "admin"  # every method
    WORKER = "worker"  # what a worker process calls
    READER = "reader"  # Get*, List*, Watch*


class KeysError(ValueError):
    """A keys file or GYOZA_API_KEYS entry is malformed; the message never holds a key."""


@dataclass(frozen=True, slots=True)
class KeyEntry:
    """One configured key; `where` says where it was given (for errors), and repr hides it."""

    role: Role
    key: str = field(repr=False)
    where: str = ""


@dataclass(frozen=True, slots=True)
class ApiKeys:
    """The configured keys, as (SHA-256 digest, role) pairs; empty means the server is open."""

    entries: tuple[tuple[bytes, Role], ...] = ()

    @classmethod
    def of(cls, keys: Iterable[KeyEntry]) -> ApiKeys:
        """From parsed entries; raises KeysError for a key given twice."""
        seen: dict[bytes, str] = {}
        entries: list[tuple[bytes, Role]] = []
        for entry in keys:
            digest = _digest(entry.key)
            if digest in seen:
                raise KeysError(f"{entry.where}: the same key as {seen[digest]}")
            seen[digest] = entry.where
            entries.append((digest, entry.role))
        return cls(tuple(entries))

    def __bool__(self) -> bool:
        return bool(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def role_of(self, key: str) -> Role | None:
        """The role of `key`, or None: the time taken does not depend on which key matched."""
        digest = _digest(key)
        found: Role | None = None
        for stored, role in self.entries:
            if hmac.compare_digest(stored, digest):
                found = role
        return found

    def summary(self) -> str:
        """E.g. "3 keys (admin 1, worker 2)": counts by role, never a key."""
        counts = Counter(role for _, role in self.entries)
        by_role = ", ".join(f"{role} {counts[role]}" for role in Role if counts[role])
        noun = "key" if len(self) == 1 else "keys"
        return f"{len(self)} {noun} ({by_role})"


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def key_problem(key: str) -> str:
    """Why `key` cannot be a configured key, or "" when it can."""
    if len(key) < MIN_KEY_LENGTH:
        return f"must be at least {MIN_KEY_LENGTH} characters"
    if any(not ("!" <= c <= "~") or c == "," for c in key):
        return "must be visible ASCII characters without spaces or commas"
    return ""


def parse_entry(text: str, where: str) -> KeyEntry:
    """One `ROLE:KEY`; `where` (e.g. "keys.txt line 3") goes into the error, the key never."""
    role_name, sep, key = text.partition(":")
    role_name = role_name.strip().lower()
    if not sep:
        raise KeysError(f"{where}: expected ROLE:KEY (roles: {_roles()})")
    try:
        role = Role(role_name)
    except ValueError:
        raise KeysError(f"{where}: unknown role {role_name!r} (roles: {_roles()})") from None
    problem = key_problem(key.strip())
    if problem:
        raise KeysError(f"{where}: the key {problem}")
    return KeyEntry(role, key.strip(), where)


def parse_keys_file(text: str, name: str) -> list[KeyEntry]:
    """A keys file: one `ROLE:KEY` a line; blank lines and `#` comments are skipped."""
    out: list[KeyEntry] = []
    for n, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            out.append(parse_entry(stripped, f"{name} line {n}"))
    return out


def parse_keys_list(text: str, name: str) -> list[KeyEntry]:
    """`ROLE:KEY,ROLE:KEY` (the GYOZA_API_KEYS form); empty items are skipped."""
    items = [item.strip() for item in text.split(",")]
    return [parse_entry(item, f"{name} item {n}") for n, item in enumerate(items, 1) if item]


def _roles() -> str:
    return ", ".join(role.value for role in Role)
