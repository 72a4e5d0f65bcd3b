"""Fetching result images: bounded, verified, retried apart from the paid generation.

Result URLs are signed OSS links that expire (24 h), so every image of a generation is fetched
at once, right after the task succeeds. The download is free; the generation is not. A failed
download is therefore retried here on its own, never by generating again.
"""
from __future__ import annotations

import asyncio
import io
import logging
from dataclasses import dataclass

import aiohttp
from PIL import Image

from imgbuild.providers.base import ProviderError
from imgbuild.providers.dashscope.timing import Backoff

log = logging.getLogger("imgbuild.dashscope")

_CHUNK = 64 * 1024
_SCHEMES = ("http", "https")


class DownloadError(ProviderError):
    """A result image could not be fetched. `expired`: the URL is gone (403/404), so only a
    fresh URL (re-querying the task) can help; retrying the same URL cannot."""

    def __init__(self, code: str, message: str, *, expired: bool = False,
                 retryable: bool = False, status: int | None = None) -> None:
        super().__init__(code, message, status=status)
        self.expired = expired
        self.retryable = retryable


@dataclass(frozen=True)
class Downloader:
    session: aiohttp.ClientSession
    max_bytes: int
    timeout: float
    retries: int
    backoff: Backoff

    async def fetch_all(self, urls: list[str], width: int, height: int) -> list[bytes]:
        """Every image, in order; raises the most telling DownloadError if any fails.

        An expired URL wins over other errors, because the caller can cure it for all images
        at once by asking the task for fresh URLs.
        """
        got = await asyncio.gather(*(self.fetch(u, width, height) for u in urls),
                                   return_exceptions=True)
        errors = [g for g in got if isinstance(g, BaseException)]
        for error in errors:
            if not isinstance(error, DownloadError):
                raise error
        if errors:
            raise next((e for e in errors if e.expired), errors[0])  # type: ignore[union-attr]
        return [g for g in got if isinstance(g, bytes)]

    async def fetch(self, url: str, width: int, height: int) -> bytes:
        """One verified image, retrying transient failures (reset, truncation, 5xx)."""
        attempt = 0
        while True:
            try:
                data = await self._get(url)
                await asyncio.to_thread(verify_image, data, width, height)
                return data
            except DownloadError as error:
                if not error.retryable or attempt >= self.retries:
                    raise
                delay = self.backoff.delay(attempt)
                log.info("retrying download of %s in %.2fs: %s", _short(url), delay, error)
            await asyncio.sleep(delay)
            attempt += 1

    async def _get(self, url: str) -> bytes:
        _check_scheme(url)
        try:
            # No Authorization header: these are third-party (OSS) URLs and must never see the key.
            timeout = aiohttp.ClientTimeout(total=self.timeout)
            async with self.session.get(url, timeout=timeout) as resp:
                _check_scheme(str(resp.url))  # after redirects, too
                if resp.status in (403, 404):
                    raise DownloadError("ResultExpired", f"result URL answered HTTP {resp.status} "
                                        f"(expired?): {_short(url)}", expired=True,
                                        status=resp.status)
                if resp.status != 200:
                    raise DownloadError("DownloadFailed", f"HTTP {resp.status} for {_short(url)}",
                                        retryable=resp.status >= 500 or resp.status in (408, 429),
                                        status=resp.status)
                return await self._read_capped(resp, url)
        except (aiohttp.NonHttpUrlRedirectClientError, aiohttp.InvalidUrlRedirectClientError):
            raise DownloadError("UnsafeURL", f"refusing a redirect of {_short(url)} to a "
                                "non-http(s) URL") from None
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise DownloadError("DownloadFailed", f"{type(exc).__name__} while fetching "
                                f"{_short(url)}: {exc}", retryable=True) from None

    async def _read_capped(self, resp: aiohttp.ClientResponse, url: str) -> bytes:
        if resp.content_length is not None and resp.content_length > self.max_bytes:
            raise _too_large(url, resp.content_length, self.max_bytes)
        buf = bytearray()
        async for chunk in resp.content.iter_chunked(_CHUNK):
            buf += chunk
            if len(buf) > self.max_bytes:  # servers may omit or lie about Content-Length
                raise _too_large(url, len(buf), self.max_bytes)
        return bytes(buf)


def verify_image(data: bytes, width: int, height: int) -> None:
    """Decode fully (a truncated PNG often opens fine and fails only on load) and check size."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            size = im.size
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, bomb errors...
        # Retryable: a body cut short without a Content-Length looks exactly like this.
        raise DownloadError("BadImage", f"downloaded {len(data)} bytes do not decode as an "
                            f"image: {exc}", retryable=True) from None
    if size != (width, height):
        raise DownloadError("WrongImageSize", f"image is {size[0]}*{size[1]}, "
                            f"requested {width}*{height}")


def _check_scheme(url: str) -> None:
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme not in _SCHEMES:
        raise DownloadError("UnsafeURL", f"refusing result URL with scheme {scheme or 'none'!r}")


def _too_large(url: str, size: int, cap: int) -> DownloadError:
    return DownloadError("DownloadTooLarge", f"result image {_short(url)} is larger than the "
                         f"{cap:,}-byte cap (got at least {size:,} bytes)")


def _short(url: str) -> str:
    # Drop the query: signed URLs carry credentials (OSS signatures) that don't belong in logs.
    return url.split("?", 1)[0]


__all__ = ["DownloadError", "Downloader", "verify_image"]
