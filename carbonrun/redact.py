"""Secrets out of what carbonrun shows or keeps: one function for messages, notes, spool files and records.

Two places hold a password in what users type: the userinfo of a URL (postgresql://user:pw@host) and a
keyword that names a secret (?password=..., token=..., a libpq `password=...`). Both are replaced with
`***` wherever they appear in a text, even in a URL too malformed for urllib to parse (a malformed
password is exactly what an error message would otherwise echo). Over-redacting is preferred to leaking:
a `key=` that held no secret loses only its value.
"""
from __future__ import annotations

import re

MASK = "***"
SECRET_KEYS = ("password", "passwd", "pwd", "pass", "passphrase", "secret", "token", "access_token",
               "refresh_token", "id_token", "auth", "auth_token", "authorization", "key", "apikey", "api_key",
               "api-key", "client_secret", "sslpassword", "signature", "sig", "credential", "credentials")

# scheme://user:password@host: the password runs to the last "@" of the (space-free) URL, so that an
# unescaped "@", "/" or "[" inside it cannot end it early.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)([^\s:/@]*):([^\s]*)@(?=[^\s@]*(?:[\s]|$))")
_USERINFO_ANY = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)([^\s:/@]*):([^\s@]*)@")
# key=value where the key names a secret, after the start, ? & ; a space, a comma or a quote.
_KEYWORD = re.compile(
    r"(?i)(^|[?&;\s,(\"'{])((?:" + "|".join(re.escape(k) for k in sorted(SECRET_KEYS, key=len, reverse=True))
    + r")\s*=\s*)('[^']*'|\"[^\"]*\"|[^&;\s'\",)}]*)"
)


def redact_text(text: str) -> str:
    """`text` with every URL password and every secret-named key's value replaced by ***."""
    if not text or ("@" not in text and "=" not in text):
        return text
    out = _USERINFO.sub(lambda m: f"{m.group(1)}{m.group(2)}:{MASK}@", text)
    out = _USERINFO_ANY.sub(lambda m: f"{m.group(1)}{m.group(2)}:{MASK}@", out)
    return _KEYWORD.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}" if m.group(3) else m.group(0), out)


def redact(url: str) -> str:
    """The URL (or any text holding URLs) without its passwords, for messages, notes and spool files."""
    return redact_text(str(url))
