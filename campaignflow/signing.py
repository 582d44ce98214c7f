"""One-click decision links: signed (itsdangerous), bound to one gate and one approver, expiring, single use.

A token is itsdangerous' URL-safe `payload.signature`. The payload names the gate,
the person, the decision, an expiry and a nonce; the nonce is stored when
the link is used, so a second use is refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass

from itsdangerous import BadData, URLSafeSerializer

from campaignflow import settings
from campaignflow.errors import UserError

DEFAULT_TTL = 7 * 24 * 3600


class LinkRefused(UserError):
    """A link that must not decide anything; `reason` is what the page tells the person."""

    def __init__(self, reason: str, status: int):
        super().__init__(reason)
        self.status = status


class KeyUnusable(UserError):
    """The server cannot sign or check links safely; the message says how to fix its key."""

    status = 503


@dataclass(frozen=True)
class LinkClaim:
    gate_id: int
    person: str
    decision: str
    expires: int
    nonce: str


def secret() -> bytes:
    """`$CAMPAIGNFLOW_SECRET`, else a random key kept (mode 600) in the home folder.

    An empty key would make every link forgeable, so one is never used: the key file is created
    whole or not at all, and an empty one (from an older version, or edited by hand) is refused.
    """
    config = settings.get()
    value = config.secret.get_secret_value() if config.secret else ""
    if value.strip():
        return value.encode()
    path = config.home_dir() / "link-secret"
    if not path.exists():
        _create_key(path)
    key = path.read_text().strip()
    if not key:
        raise KeyUnusable(f"the link-signing key {path} is empty, so links could be forged; delete the file "
                        f"(a new key is made; links already sent stop working) or set CAMPAIGNFLOW_SECRET")
    return key.encode()


def _create_key(path) -> None:
    """Write a new key to a private temporary file, then link it into place unless a key is already there.

    `os.link` fails when the name exists, so when several processes start at once exactly one key
    wins, and every process reads that same complete key back.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(48))
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass  # another process made the key first: use theirs
    finally:
        temporary.unlink(missing_ok=True)


def _serializer() -> URLSafeSerializer:
    return URLSafeSerializer(secret(), salt="campaignflow.decision-link",
                             signer_kwargs={"digest_method": hashlib.sha256})


def sign(gate_id: int, person: str, decision: str = "approve", ttl: int = DEFAULT_TTL, now: float | None = None) -> str:
    return _serializer().dumps({"g": gate_id, "p": person, "d": decision, "e": int((now or time.time()) + ttl),
                                "n": secrets.token_urlsafe(12)})


def verify(token: str, now: float | None = None) -> LinkClaim:
    """The claim in a genuine, unexpired token; `LinkRefused` otherwise (use is checked in the store)."""
    if "." not in token:
        raise _incomplete()
    try:
        data = _serializer().loads(token)
    except BadData:
        data = _legacy_payload(token)
    claim = LinkClaim(int(data["g"]), str(data["p"]), str(data["d"]), int(data["e"]), str(data["n"]))
    if claim.expires < (now or time.time()):
        raise LinkRefused("This link has expired. Decide from `campaignflow approve` or ask for a new link.", 410)
    return claim


def _incomplete() -> LinkRefused:
    return LinkRefused("This link is incomplete or was altered. Ask for a new one.", 400)


# Links signed by hand before itsdangerous (2026-11-25): `base64url(json).base64url(HMAC-SHA256)`. They live
# at most DEFAULT_TTL (7 days): delete this function, and its call above, 7 days after the release that
# ships itsdangerous links (then `verify` refuses BadData as altered, 403).
def _legacy_payload(token: str) -> dict:
    try:
        body, signature = token.split(".")
    except ValueError:
        raise _incomplete() from None
    expected = base64.urlsafe_b64encode(hmac.new(secret(), body.encode(), hashlib.sha256).digest()).rstrip(b"=")
    # Compared as bytes: a link can carry any character, and compare_digest refuses non-ASCII text.
    if not hmac.compare_digest(signature.encode(), expected):
        raise LinkRefused("This link was altered or was not issued by campaignflow. Nothing was recorded.", 403)
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
