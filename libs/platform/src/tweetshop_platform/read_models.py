"""The rules a read model of another service's topic follows, said once for every service.

A read model is a table a service keeps only from a topic (feed's and checkout's copies of catalog's
products and merchants). Two rules decide what a late, replayed or reordered event does to it; each is one
statement built here, so every service that keeps such a table behaves the same
(``tests/contract/test_read_model_rules.py`` holds every service to them):

- **Newest version wins** (``NewestVersionWins``): an event that carries its aggregate's ``version`` replaces
  the stored row only when it is newer. The guard is in the upsert itself (``ON CONFLICT … DO UPDATE …
  WHERE <table>.version < EXCLUDED.version``), so two writers racing on a new row cannot let the older state
  win, and no row lock or read comes first.
- **Key registration vs rotation** (``KeyVerifiers``): an API key's hash announced by a registration is taken
  only while none is stored; a rotation's always is. The rotation is the newer word whichever arrives first, so
  a rotation before its registration creates the row (without the registration's other columns, which the
  registration fills in later) rather than failing: a reordering or a replay is normal, not a dead letter.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")


def _identifier(name: str) -> str:
    if not _IDENTIFIER.match(name):
        raise ValueError(f"not a safe SQL identifier: {name!r}")
    return name


def _placeholders(count: int) -> str:
    return ", ".join(f"${i}" for i in range(1, count + 1))


class NewestVersionWins:
    """The conditional upsert of one read-model table keyed by ``key``: a row is written only when it is new or
    its ``version`` is greater than the stored one.

    ``columns`` are every column the event sets, ``key`` and ``version`` included; ``touched`` (when given) is
    set to ``now()`` whenever the row is written.
    """

    def __init__(
        self,
        table: str,
        *,
        key: str,
        columns: Sequence[str],
        version: str = "version",
        touched: str | None = "updated_at",
    ) -> None:
        self.table = _identifier(table)
        self.key = _identifier(key)
        self.version = _identifier(version)
        self.columns = tuple(_identifier(c) for c in columns)
        if key not in self.columns or version not in self.columns:
            raise ValueError(f"columns of {table} must include its key {key!r} and its version {version!r}")
        assignments = [f"{c} = EXCLUDED.{c}" for c in self.columns if c != key]
        if touched is not None:
            assignments.append(f"{_identifier(touched)} = now()")
        self.sql = (
            f"INSERT INTO {self.table} ({', '.join(self.columns)}) VALUES ({_placeholders(len(self.columns))}) "
            f"ON CONFLICT ({self.key}) DO UPDATE SET {', '.join(assignments)} "
            f"WHERE {self.table}.{self.version} < EXCLUDED.{self.version} "
            "RETURNING true"
        )

    async def upsert(self, conn: asyncpg.Connection, state: Mapping[str, Any] | object) -> bool:
        """Store ``state`` (a mapping, or an object such as a dataclass, with a value per column; other keys
        or attributes are ignored) unless a version at least as new is stored; True when the row was written,
        False when ``state`` was stale or a replay (nothing changed)."""
        if isinstance(state, Mapping):
            missing = [c for c in self.columns if c not in state]
            values = [state[c] for c in self.columns if c in state]
        else:
            missing = [c for c in self.columns if not hasattr(state, c)]
            values = [getattr(state, c) for c in self.columns if hasattr(state, c)]
        if missing:
            raise KeyError(f"no value for {', '.join(missing)} of {self.table}")
        written = await conn.fetchval(self.sql, *values)
        return bool(written)


class KeyVerifiers:
    """The API key verifiers (hashes) of one read-model table keyed by ``key``: ``register`` and ``rotate``.

    ``details`` are the other columns a registration carries (feed's merchant handle and name): a registration
    always writes them (a replay rewrites the same values), a rotation never does, so a row a rotation created
    first has them NULL until its registration arrives.
    """

    def __init__(
        self,
        table: str,
        *,
        key: str,
        key_hash: str,
        details: Sequence[str] = (),
        touched: str | None = "updated_at",
    ) -> None:
        self.table = _identifier(table)
        self.key = _identifier(key)
        self.key_hash = _identifier(key_hash)
        self.details = tuple(_identifier(c) for c in details)
        touch = [f"{_identifier(touched)} = now()"] if touched is not None else []
        registered = (self.key, self.key_hash, *self.details)
        # A stored hash came from a rotation (newer) or from this same registration (a replay): keep it.
        register_set = [
            f"{self.key_hash} = COALESCE({self.table}.{self.key_hash}, EXCLUDED.{self.key_hash})",
            *(f"{c} = EXCLUDED.{c}" for c in self.details),
            *touch,
        ]
        self.register_sql = (
            f"INSERT INTO {self.table} ({', '.join(registered)}) VALUES ({_placeholders(len(registered))}) "
            f"ON CONFLICT ({self.key}) DO UPDATE SET {', '.join(register_set)}"
        )
        rotate_set = [f"{self.key_hash} = EXCLUDED.{self.key_hash}", *touch]
        self.rotate_sql = (
            f"INSERT INTO {self.table} ({self.key}, {self.key_hash}) VALUES ($1, $2) "
            f"ON CONFLICT ({self.key}) DO UPDATE SET {', '.join(rotate_set)}"
        )

    async def register(
        self, conn: asyncpg.Connection, key: Any, key_hash: str | None, details: Mapping[str, Any] | None = None
    ) -> None:
        """A registration: its ``details`` always, its key hash only while none is stored (a rotation's wins)."""
        given = details or {}
        missing = [c for c in self.details if c not in given]
        if missing:
            raise KeyError(f"no value for {', '.join(missing)} of {self.table}")
        await conn.execute(self.register_sql, key, key_hash, *(given[c] for c in self.details))

    async def rotate(self, conn: asyncpg.Connection, key: Any, key_hash: str) -> None:
        """A rotation: its key hash always, creating the row when the registration has not arrived yet."""
        await conn.execute(self.rotate_sql, key, key_hash)

    async def record(
        self,
        conn: asyncpg.Connection,
        key: Any,
        key_hash: str | None,
        *,
        rotated: bool,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        """``rotate`` when ``rotated``, else ``register``."""
        if rotated:
            if key_hash is None:
                raise ValueError("a rotation carries the new key's hash")
            await self.rotate(conn, key, key_hash)
        else:
            await self.register(conn, key, key_hash, details)
