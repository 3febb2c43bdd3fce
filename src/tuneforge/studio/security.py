"""Who may use the studio, and which files it may read.

On loopback (the default) the studio trusts the machine's own user, as a local Jupyter does, but
still refuses two browser attacks: a page on another site posting to ``127.0.0.1`` (state-changing
requests must come from the studio's own origin) and DNS rebinding (the ``Host`` header must name
the loopback). Bound to any other address every request needs the token: from the ``token`` query
parameter once (it is then kept in an HTTP-only cookie), the cookie, or the ``X-Studio-Token`` header.

Files: only paths under the runs root (which holds the uploads) may be read, so a request can never
make the studio read ``/etc/passwd`` or a user's keys, whatever path it names.
"""

from __future__ import annotations

import hmac
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from tuneforge.errors import UserError

LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
COOKIE = "tuneforge_studio"
HEADER = "x-studio-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def is_loopback(host: str) -> bool:
    return host in LOOPBACK or host.startswith("127.")


def new_token() -> str:
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class Guard:
    """The studio's access rule: ``token`` is None only when bound to loopback."""

    host: str
    token: str | None

    @classmethod
    def for_host(cls, host: str, token: str | None) -> Guard:
        """A token is required off loopback; one is made when the user gave none (the caller prints it once)."""
        if not is_loopback(host) and not token:
            token = new_token()
        return cls(host, token)

    def presented_token_ok(self, query: str | None, cookie: str | None, header: str | None) -> bool:
        if self.token is None:
            return True
        return any(t is not None and hmac.compare_digest(t.encode(), self.token.encode())
                   for t in (query, cookie, header))

    def host_ok(self, host_header: str | None) -> bool:
        """On loopback the Host header must be a loopback name (no DNS rebinding)."""
        if self.token is not None:
            return True
        name = urlsplit(f"//{host_header or ''}").hostname or ""
        return is_loopback(name)

    @staticmethod
    def same_origin(host_header: str | None, origin: str | None, referer: str | None) -> bool:
        """A state-changing request must say it comes from a page of this studio (Origin, else Referer)."""
        source = origin if origin and origin != "null" else referer
        if not source or not host_header:
            return False
        return urlsplit(source).netloc == host_header


def run_name(name: str) -> str:
    """A run's folder name as it may appear in a URL: one path component, no dots first, no separators."""
    if not _NAME.match(name):
        raise UserError(f"{name!r} is not a run name (letters, digits, '.', '_', '-'; one folder under the runs root)")
    return name


def inside(root: Path, path: Path | str) -> Path:
    """``path`` resolved (links followed); refused unless it lies under ``root``."""
    resolved = Path(path).expanduser()
    resolved = (resolved if resolved.is_absolute() else root / resolved).resolve()
    if resolved != root and root not in resolved.parents:
        raise UserError(f"{path} is outside the studio's runs root {root}; the studio reads only files under it "
                        "(upload the file, or copy it there)")
    return resolved


def model_ref(root: Path, model: str) -> str:
    """A model the studio may load: a registry name, or a folder under the runs root."""
    from tuneforge.models.resolve import MODELS

    if model in MODELS.names():
        return model
    return str(inside(root, model))
