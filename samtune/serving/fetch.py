"""Fetching ``image.type: url`` images, only from URLs the server was told to allow.

Off unless ``allow_urls`` lists prefixes: a server that fetches any URL a request names can be
made to reach into the network it sits in. A URL is fetched only when it starts with one of the
prefixes (scheme, host and port equal, the path under the prefix's path, e.g.
``https://data.example.org/images/``), over http or https, without following redirects (a redirect could lead outside the allowed prefixes), within
a time limit and a byte limit.
"""

from __future__ import annotations

import posixpath
import urllib.error
import urllib.request
from collections.abc import Sequence
from urllib.parse import unquote, urlsplit

from samtune.serving.errors import ApiError

SCHEMES = ("http", "https")


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001, D102
        raise ApiError(
            400,
            f"image URL {req.full_url} redirects ({code}) to {newurl}: redirects are not "
            "followed; give the final URL",
            "image.value",
        )


def _clean(path: str) -> str:
    """The path as a server resolves it (``%2e%2e``, ``..`` and ``.`` segments applied)."""
    resolved = posixpath.normpath(unquote(path or "/"))
    return resolved + ("/" if path.endswith("/") and not resolved.endswith("/") else "")


class UrlFetcher:
    """``fetch(url) -> bytes`` for the allowed URL prefixes.

    Args:
        allow: URL prefixes that may be fetched (each must be an http(s) URL).
        max_bytes: the largest body accepted.
        timeout_s: connect and read time limit per fetch.

    Raises:
        ValueError: a prefix that is not an http(s) URL with a host.
    """

    def __init__(self, allow: Sequence[str], *, max_bytes: int, timeout_s: float = 10.0) -> None:
        self.allow = [str(a) for a in allow]
        for prefix in self.allow:
            parts = urlsplit(prefix)
            if parts.scheme not in SCHEMES or not parts.netloc:
                raise ValueError(
                    f"allow_urls: {prefix!r} is not an http(s) URL prefix with a host "
                    "(e.g. https://data.example.org/images/)"
                )
        self.max_bytes = int(max_bytes)
        self.timeout_s = float(timeout_s)
        self._opener = urllib.request.build_opener(_NoRedirects)

    def allowed(self, url: str) -> bool:
        """Whether ``url`` is under an allowed prefix: the same scheme, host and port (no user
        name or password in the URL), and a path that starts with the prefix's path."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            return False
        if parts.scheme not in SCHEMES or parts.username or parts.password or not parts.hostname:
            return False
        for prefix in self.allow:
            allowed = urlsplit(prefix)
            if (
                parts.scheme == allowed.scheme
                and parts.hostname == allowed.hostname
                and port == allowed.port
                and _clean(parts.path).startswith(allowed.path)
            ):
                return True
        return False

    def __call__(self, url: str) -> bytes:
        """The bytes at ``url``.

        Raises:
            ApiError: 400 naming ``image.value`` for a URL that is not allowed, not reachable,
                not answered with 200 or empty; 413 for one larger than ``max_bytes``.
        """
        if not self.allowed(url):
            raise ApiError(
                400,
                f"image URL {url!r} is not under an allowed prefix of this server "
                f"(allow_urls: {', '.join(self.allow)})",
                "image.value",
            )
        try:
            with self._opener.open(url, timeout=self.timeout_s) as answer:
                if answer.status != 200:
                    raise ApiError(400, f"image URL {url} answered {answer.status}", "image.value")
                data = answer.read(self.max_bytes + 1)
        except ApiError:
            raise
        except urllib.error.HTTPError as exc:
            raise ApiError(400, f"image URL {url} answered {exc.code}", "image.value") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiError(
                400, f"image URL {url} could not be fetched: {reason}", "image.value"
            ) from None
        if len(data) > self.max_bytes:
            raise ApiError(
                413, f"image at {url} is larger than the limit of {self.max_bytes} bytes", "image"
            )
        if not data:
            raise ApiError(400, f"image URL {url} gave no bytes", "image.value")
        return data
