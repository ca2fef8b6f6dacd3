"""Bearer tokens: 256-bit random, stored only as SHA-256 digests, scoped, expiring, revocable.

A token is ``assay_`` plus 43 URL-safe characters (32 random bytes from :mod:`secrets`). The
database keeps ``sha256(token)``; a presented token is hashed, looked up by digest, and the
digests are compared with :func:`hmac.compare_digest`. A digest cannot be turned back into
a token, so a leaked database does not leak tokens.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import Connection, insert, select, update

from assay.errors import InputError
from assay.service._db import ServiceDB, iso
from assay.service._tables import teams, tokens

#: Token scopes: a team member, the organiser (admin routes), a scorer (worker routes).
SCOPES = ("participant", "organiser", "worker")

_PREFIX = "assay_"


def digest(token: str) -> str:
    """The stored form of ``token``: its SHA-256 in hex."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class Caller:
    """Who presented a valid token: its id, scope and team (participants only)."""

    token_id: int
    scope: str
    team_id: int | None
    team: str | None


def issue_token(
    db: ServiceDB,
    scope: str,
    *,
    team: str | None = None,
    expires_days: float | None = 90.0,
    label: str = "",
    con: Connection | None = None,
) -> tuple[int, str]:
    """Create a token; returns (token id, the token). The token is shown once, never stored.

    Raises
    ------
    InputError
        An unknown scope, a participant token without a team (or with an unknown one).
    """
    if scope not in SCOPES:
        raise InputError(f"Unknown token scope {scope!r}; choose one of {', '.join(SCOPES)}.")
    if scope == "participant" and team is None:
        raise InputError("A participant token needs --team TEAM.")
    if scope != "participant" and team is not None:
        raise InputError(f"An {scope} token belongs to no team; leave --team out.")
    if expires_days is not None and expires_days <= 0:
        raise InputError(f"--expires-days must be positive, got {expires_days}.")
    token = _PREFIX + secrets.token_urlsafe(32)
    now = db.now()

    def _insert(c: Connection) -> int:
        team_id = None
        if team is not None:
            team_id = c.execute(select(teams.c.team_id).where(teams.c.name == team)).scalar()
            if team_id is None:
                raise InputError(f"No team {team!r}; add it first (assay admin team {team}).")
        result = c.execute(
            insert(tokens).values(
                digest=digest(token),
                scope=scope,
                team_id=team_id,
                label=label,
                created_at=iso(now),
                expires_at=None if expires_days is None else iso(now + expires_days * 86400),
            )
        )
        key = result.inserted_primary_key
        assert key is not None
        return int(key[0])

    if con is not None:
        return _insert(con), token
    with db.write() as c:
        return _insert(c), token


def authenticate(db: ServiceDB, token: str | None) -> Caller | None:
    """The caller of ``token``, or None when it is missing, unknown, expired or revoked."""
    if not token or not token.startswith(_PREFIX) or len(token) > 200:
        return None
    wanted = digest(token)
    query = (
        select(tokens, teams.c.name)
        .outerjoin(teams, teams.c.team_id == tokens.c.team_id)
        .where(tokens.c.digest == wanted)
    )
    with db.read() as con:
        row = con.execute(query).mappings().first()
    if row is None or not hmac.compare_digest(str(row["digest"]), wanted):
        return None
    if row["revoked_at"] is not None:
        return None
    if row["expires_at"] is not None and row["expires_at"] <= iso(db.now()):
        return None
    return Caller(int(row["token_id"]), str(row["scope"]), row["team_id"], row["name"])


def revoke_token(db: ServiceDB, token_id: int) -> bool:
    """Revoke a token by id; False when there is no such (unrevoked) token."""
    with db.write() as con:
        done = con.execute(
            update(tokens)
            .where(tokens.c.token_id == token_id, tokens.c.revoked_at.is_(None))
            .values(revoked_at=iso(db.now()))
        )
    return bool(done.rowcount)


def list_tokens(db: ServiceDB) -> list[dict[str, object]]:
    """Every token's id, scope, team, label, creation, expiry and revocation (not digests)."""
    query = (
        select(
            tokens.c.token_id,
            tokens.c.scope,
            teams.c.name.label("team"),
            tokens.c.label,
            tokens.c.created_at,
            tokens.c.expires_at,
            tokens.c.revoked_at,
        )
        .outerjoin(teams, teams.c.team_id == tokens.c.team_id)
        .order_by(tokens.c.token_id)
    )
    with db.read() as con:
        return [dict(r) for r in con.execute(query).mappings()]
