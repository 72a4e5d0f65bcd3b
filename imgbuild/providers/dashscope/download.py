"""Fetching result images: bounded, verified, retried apart from the paid generation.

Result URLs are signed OSS links that expire (24 h), so every image of a generation is fetched
at once, right after the task succeeds. The download is free; the generation is not. A failed
download is therefore retried here on its own, never by generating again.
"""
from __future__ import annotations

import asyncio
import io
import logging
import math
from dataclasses import dataclass

import aiohttp
from imgbuild.images.header import header_size, png_problem
from imgbuild.providers.base import ProviderError
from imgbuild.providers.dashscope.timing import Backoff

log = logging.getLogger("imgbuild.dashscope")

_CHUNK = 64 * 1024
_SCHEMES = ("http", "https")


class DownloadError(ProviderError):
    """A result image could not be fetched. `expired`: the URL is gone (403/404), so only a
    fresh URL (re-querying the task) can help; retrying the same URL cannot. `retryable`: the
    same URL may work on another try (reset, truncation, 5xx)."""

    def __init__(self, code: str, message: str, *, expired: bool = False,
                 retryable: bool = False, status: int | None = None) -> None:
        super().__init__(code, message, status=status, retryable=retryable)
        self.expired = expired


# A paid image whose aspect ratio is within this of the request's is kept, whatever its exact
# pixel size: the docs never promise the exact size back for free sizes (issue 13).
ASPECT_TOLERANCE = 0.02
# ... and one with a few more pixels than the model's largest size too; far more is refused
# before decoding (a hostile or broken server can send a small file of enormous dimensions).
PIXEL_TOLERANCE = 1.05


@dataclass(frozen=True)
class Fetched:
    data: bytes
    width: int
    height: int


@dataclass(frozen=True)
class Downloader:
    session: aiohttp.ClientSession
    max_bytes: int
    timeout: float
    retries: int
    backoff: Backoff

    async def fetch_all(self, urls: list[str], width: int, height: int,
                        max_pixels: int | None = None) -> list[Fetched]:
        """Every image, in order; raises the most telling DownloadError if any fails.

        An expired URL wins over other errors, because the caller can cure it for all images
        at once by asking the task for fresh URLs.
        """
        got = await asyncio.gather(*(self.fetch(u, width, height, max_pixels) for u in urls),
                                   return_exceptions=True)
        errors = [g for g in got if isinstance(g, BaseException)]
        for error in errors:
            if not isinstance(error, DownloadError):
                raise error
        if errors:
            raise next((e for e in errors if e.expired), errors[0])  # type: ignore[union-attr]
        return [g for g in got if isinstance(g, Fetched)]

    async def fetch(self, url: str, width: int, height: int,
                    max_pixels: int | None = None) -> Fetched:
        """One verified image, retrying transient failures (reset, truncation, 5xx)."""
        attempt = 0
        while True:
            try:
                data = await self._get(url)
                if data[:4] == b"\x89PNG":  # a CRC walk: cheap, no decoding, no thread hop
                    size = verify_image(data, width, height, max_pixels)
                else:
                    size = await asyncio.to_thread(verify_image, data, width, height, max_pixels)
                return Fetched(data, *size)
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


def verify_image(data: bytes, width: int, height: int,
                 max_pixels: int | None = None) -> tuple[int, int]:
    """The image's (width, height), after checking, from its header and before any decoding,
    that it is a PNG, JPEG or WebP no larger than `max_pixels` (with PIXEL_TOLERANCE) and of
    the requested aspect ratio (with ASPECT_TOLERANCE); then that it arrived whole. A few
    pixels off the request is fine.

    A PNG (what DashScope returns) is checked chunk by chunk (images.header.png_problem):
    each chunk's CRC-32, the chunk order, and IEND at the end, which is what catches a body cut
    short or damaged on the way, at a small fraction of the cost of decoding it (the SDK checks
    nothing). JPEG and WebP carry no such checksums, so they are decoded in full."""
    size = header_size(data)
    if size is None:
        # Retryable: a body cut short without a Content-Length can look like this.
        raise DownloadError("BadImage", f"downloaded {len(data)} bytes are not a PNG, JPEG or "
                            "WebP image", retryable=True)
    _check_dimensions(size, width, height, max_pixels)
    if data[:4] == b"\x89PNG":
        problem = png_problem(data)
        if problem is not None:
            raise DownloadError("BadImage", f"downloaded {len(data)} bytes are not an intact "
                                f"PNG: {problem}", retryable=True)
        return size
    from PIL import Image

    try:
        # Only these formats: Image.open would otherwise try every plugin Pillow has.
        with Image.open(io.BytesIO(data), formats=_FORMATS) as im:
            im.load()
            decoded = im.size
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, bomb errors...
        raise DownloadError("BadImage", f"downloaded {len(data)} bytes do not decode as an "
                            f"image: {_one_line(exc)}", retryable=True) from None
    if decoded != size:
        raise DownloadError("BadImage", f"the image header says {size[0]}*{size[1]} but it "
                            f"decodes as {decoded[0]}*{decoded[1]}", retryable=True)
    return size


_FORMATS = ("PNG", "JPEG", "WEBP")


def _check_dimensions(size: tuple[int, int], width: int, height: int,
                      max_pixels: int | None) -> None:
    w, h = size
    limit = max(max_pixels or 0, width * height) * PIXEL_TOLERANCE
    if w <= 0 or h <= 0 or w * h > limit:
        raise DownloadError("ImageTooLarge", f"image is {w}*{h} pixels ({w * h:,}), more than "
                            f"the model can make ({int(limit):,}); refused without decoding it")
    if abs(math.log((w / h) / (width / height))) > math.log1p(ASPECT_TOLERANCE):
        raise DownloadError("WrongImageSize", f"image is {w}*{h}, requested {width}*{height}: "
                            f"aspect ratio {w / h:.3f} instead of {width / height:.3f}")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]


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


__all__ = ["ASPECT_TOLERANCE", "DownloadError", "Downloader", "Fetched", "header_size", "verify_image"]
