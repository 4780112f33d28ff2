"""The one place passwords are hidden: every URL, message, tag or file ecgsearch shows goes through here.

Passwords reach ecgsearch inside URLs (study storage, MLflow tracking URI). Whatever a user or a
log can see is passed through `mask_secrets` first: it hides the password of every URL in the
text, `password=` query parameters, and, given the URLs a message may echo, their raw passwords
wherever a driver repeated them.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

MASK = "***"

# `scheme://user:password@host`: the password runs to the LAST `@` of the token, so a password
# holding an unescaped `@` is masked whole rather than split where a URL parser would split it.
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s'\"]*:)(?P<password>[^\s'\"]*)@")
_QUERY_PASSWORD = re.compile(r"(?P<key>[?&](?:password|passwd|pwd)=)(?P<password>[^&#\s'\"]*)", re.IGNORECASE)


def passwords_in(url: str) -> set[str]:
    """The passwords a URL carries (userinfo and query parameters), raw and percent-decoded."""
    found = {m["password"] for m in _USERINFO.finditer(url)} | {m["password"] for m in _QUERY_PASSWORD.finditer(url)}
    if not found and "@" in url:
        # Not even URL-shaped (`postgres//user:pw@host`): whatever sits between the first `:` and the
        # last `@` may be a password.
        userinfo = url.rpartition("@")[0]
        found.add(userinfo.partition(":")[2])
    found |= {unquote(password) for password in found}
    return {password for password in found if password and password != MASK}


def mask_secrets(text: str, *sources: str) -> str:
    """`text` with every password hidden: in URLs, in `password=` parameters, and any raw password of
    the URLs in `sources` (e.g. a database driver's error message that repeats it)."""
    masked = _USERINFO.sub(lambda m: f"{m['head']}{MASK}@" if m["password"] else m[0], text)
    masked = _QUERY_PASSWORD.sub(lambda m: f"{m['key']}{MASK}", masked)
    for password in sorted(set().union(*(passwords_in(source) for source in sources)), key=len, reverse=True):
        masked = masked.replace(password, MASK)
    return masked
