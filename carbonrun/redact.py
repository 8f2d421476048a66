"""Secrets out of what carbonrun shows or keeps: one function for messages, notes, spool files and records.

Two places hold a password in what users type: the userinfo of a URL (postgresql://user:pw@host) and a
keyword that names a secret (?password=..., token=..., a libpq `password=...`). Both are replaced with
`***` wherever they appear in a text, even in a URL too malformed for urllib to parse (a malformed
password is exactly what an error message would otherwise echo). Over-redacting is preferred to leaking:
a `key=` that held no secret loses only its value.
"""
from __future__ import annotations

import re
from typing import List

MASK = "***"
SECRET_KEYS = ("password", "passwd", "pwd", "pass", "passphrase", "secret", "token", "access_token",
               "refresh_token", "id_token", "auth", "auth_token", "authorization", "key", "apikey", "api_key",
               "api-key", "client_secret", "sslpassword", "signature", "sig", "credential", "credentials")

# scheme://user:password@host: the password runs to the last "@" of the (space-free) URL, so that an
# unescaped "@", "/" or "[" inside it cannot end it early.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)([^\s:/@]*):([^\s]*)@(?=[^\s@]*(?:[\s]|$))")
_USERINFO_ANY = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)([^\s:/@]*):([^\s@]*)@")
# ... and a malformed one with a space in its password (what a parser error would echo)
_USERINFO_SPACED = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)([^\s:/@'\"]*):([^@\n'\"]*?\s[^@\n'\"]*?)@")
# key=value where the key names a secret, after the start, ? & ; a space, a comma or a quote.
_KEYWORD = re.compile(
    r"(?i)(^|[?&;\s,(\"'{])((?:" + "|".join(re.escape(k) for k in sorted(SECRET_KEYS, key=len, reverse=True))
    + r")\s*=\s*)('[^']*'|\"[^\"]*\"|[^&;\s'\",)}]*)"
)


def redact_text(text: str) -> str:
    """`text` with every URL password and every secret-named key's value replaced by ***.

    A password found once is also removed wherever else it appears: a parser's error message often
    quotes the bad part of the URL it was given.
    """
    if not text or ("@" not in text and "=" not in text):
        return text
    found: List[str] = []

    def userinfo(m: "re.Match[str]") -> str:
        found.append(m.group(3))
        return f"{m.group(1)}{m.group(2)}:{MASK}@"

    def keyword(m: "re.Match[str]") -> str:
        if not m.group(3):
            return m.group(0)
        found.append(m.group(3).strip("'\""))
        return f"{m.group(1)}{m.group(2)}{MASK}"

    out = text
    for pattern in (_USERINFO, _USERINFO_ANY, _USERINFO_SPACED):
        out = pattern.sub(userinfo, out)
    out = _KEYWORD.sub(keyword, out)
    for secret in sorted({f for f in found if len(f) >= 3 and f != MASK}, key=len, reverse=True):
        out = out.replace(secret, MASK)
    return out


def redact(url: str) -> str:
    """The URL (or any text holding URLs) without its passwords, for messages, notes and spool files."""
    return redact_text(str(url))
