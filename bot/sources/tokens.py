"""Source tokens and Standard Webhooks signatures: pure functions, no database.

A token is `kpi_<token id>_<secret>`. The database keeps the token id (to find the source),
the SHA-256 of the whole token (compared in constant time) and the signing key derived from
the token; never the token. The signing secret a sender is given is `whsec_<base64 of that key>`.

Signatures follow the Standard Webhooks specification (standardwebhooks.com): the sender sends
`webhook-id`, `webhook-timestamp` (Unix seconds) and `webhook-signature`, one or more
space-separated `v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">`; the receiver refuses a
timestamp more than 5 minutes from its clock, either way.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

TOKEN_PREFIX = "kpi_"
SECRET_PREFIX = "whsec_"
TOLERANCE = dt.timedelta(minutes=5)
_TOKEN = re.compile(r"^kpi_([0-9a-f]{12})_([A-Za-z0-9_\-]{43})$")
_SIGNING_LABEL = b"kpibot webhook signing key\x00"
MAX_WEBHOOK_ID = 200


@dataclass(frozen=True)
class NewToken:
    token: str  # shown once
    token_id: str
    token_hash: str
    signing_key: str  # hex; the HMAC key
    signing_secret: str  # whsec_…, shown once

    @classmethod
    def generate(cls) -> NewToken:
        token_id = secrets.token_hex(6)
        token = f"{TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
        key = hashlib.sha256(_SIGNING_LABEL + token.encode()).digest()
        return cls(
            token=token,
            token_id=token_id,
            token_hash=token_hash(token),
            signing_key=key.hex(),
            signing_secret=SECRET_PREFIX + base64.b64encode(key).decode(),
        )


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_id_of(token: str) -> str | None:
    """The id part of a well-formed token, else None."""
    match = _TOKEN.match(token)
    return match[1] if match else None


def same_hash(token: str, stored_hash: str) -> bool:
    return hmac.compare_digest(token_hash(token), stored_hash)


class SignatureError(Exception):
    """Why a signature was refused: `code` is stable (missing_header, bad_timestamp,
    timestamp_out_of_window, bad_signature), `header` the header at fault."""

    def __init__(self, code: str, header: str) -> None:
        super().__init__(f"{code}: {header}")
        self.code = code
        self.header = header


def sign(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<base64>` entry, as a sender computes it."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def key_of_secret(secret: str) -> bytes:
    """The HMAC key of a `whsec_<base64>` secret."""
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def signed(headers: Mapping[str, str]) -> bool:
    """Whether a request carries any Standard Webhooks header (then all three must be right)."""
    return any(name in headers for name in ("webhook-id", "webhook-timestamp", "webhook-signature"))


def verify(key_hex: str, headers: Mapping[str, str], body: bytes, now: dt.datetime) -> str:
    """Check the signature over `body`; return the webhook id. `headers` have lower-case names."""
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        if not headers.get(name, "").strip():
            raise SignatureError("missing_header", name)
    webhook_id = headers["webhook-id"].strip()
    if len(webhook_id) > MAX_WEBHOOK_ID or not webhook_id.isprintable():
        raise SignatureError("bad_webhook_id", "webhook-id")
    raw_timestamp = headers["webhook-timestamp"].strip()
    if not re.fullmatch(r"\d{1,12}", raw_timestamp):
        raise SignatureError("bad_timestamp", "webhook-timestamp")
    timestamp = int(raw_timestamp)
    if abs(now.timestamp() - timestamp) > TOLERANCE.total_seconds():
        raise SignatureError("timestamp_out_of_window", "webhook-timestamp")
    expected = sign(bytes.fromhex(key_hex), webhook_id, timestamp, body).encode()
    for entry in headers["webhook-signature"].split():
        if hmac.compare_digest(entry.encode(), expected):
            return webhook_id
    raise SignatureError("bad_signature", "webhook-signature")
