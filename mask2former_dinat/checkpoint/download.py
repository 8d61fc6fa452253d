"""Checkpoints from http(s) URLs: downloaded once into a local cache, then read from there.

A download goes to `<cache file>.partial` and is renamed to the cache file only when it is
complete and checked: its size against the server's Content-Length (Content-Range for a
resumed transfer) and, when the URL ends in `#sha256=<hex>`, its SHA-256. A cut transfer keeps
the `.partial` file, and the next run continues it with an HTTP Range request where the server
allows ranges (else it starts again). Each read waits at most $M2F_DINAT_DOWNLOAD_TIMEOUT
seconds (default 60). One process per machine downloads a URL; a web page served instead of a
checkpoint is refused; every failure says which URL and what to do.
"""
import contextlib
import hashlib
import http.client
import logging
import os
import re
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Optional, Tuple

__all__ = [
    "CACHE_ENV",
    "TIMEOUT_ENV",
    "CheckpointDownloadError",
    "cache_path_for_url",
    "cached_download",
    "default_cache_dir",
    "resolve_weights_path",
]

logger = logging.getLogger(__name__)

CACHE_ENV = "M2F_DINAT_CACHE"
TIMEOUT_ENV = "M2F_DINAT_DOWNLOAD_TIMEOUT"
PARTIAL_SUFFIX = ".partial"
_CHUNK = 1 << 20


class CheckpointDownloadError(OSError):
    """A checkpoint URL could not be downloaded completely; nothing was written to the cache."""


def default_cache_dir() -> str:
    """Where downloaded checkpoints live: $M2F_DINAT_CACHE, else $XDG_CACHE_HOME/mask2former_dinat,
    else ~/.cache/mask2former_dinat."""
    if os.environ.get(CACHE_ENV):
        return os.path.expanduser(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return os.path.join(os.path.expanduser(base), "mask2former_dinat")


def _is_url(path: str) -> bool:
    return urllib.parse.urlsplit(path).scheme.lower() in ("http", "https")


def cache_path_for_url(url: str, cache_dir: Optional[str] = None) -> str:
    """The cache file for `url`: `<cache_dir>/<host>/<url path>` (a query string adds a hash to the name).

    A file put there by hand (e.g. copied from a machine with network) is used as is.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(f"not an http(s) URL: {url!r}")
    segments = [urllib.parse.unquote(s) for s in parts.path.split("/")]
    segments = [re.sub(r"[\\/:*?\"<>|]", "_", s) for s in segments if s not in ("", ".", "..")]
    if not segments or parts.path.endswith("/"):
        raise ValueError(f"URL {url!r} does not name a file; MODEL.WEIGHTS must point at a checkpoint file.")
    if parts.query:
        stem, ext = os.path.splitext(segments[-1])
        segments[-1] = f"{stem}-{hashlib.sha256(parts.query.encode()).hexdigest()[:10]}{ext}"
    host = (parts.hostname or "unknown-host") + (f"_{parts.port}" if parts.port else "")
    return os.path.join(cache_dir or default_cache_dir(), host, *segments)


@contextlib.contextmanager
def _file_lock(path: str):
    """An exclusive advisory lock, so that processes on one machine download a URL only once."""
    try:
        import fcntl
    except ImportError:  # no fcntl (Windows): concurrent downloads stay correct, only wasteful
        yield
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def cached_download(url: str, cache_dir: Optional[str] = None, *, progress: Optional[bool] = None) -> str:
    """Download `url` into the cache once and return the local file; later calls make no request.

    progress: show a tqdm bar (None: only on a terminal).
    Raises CheckpointDownloadError (naming the URL and what went wrong) when the download fails,
    stops early or does not match its size or hash; the cache then holds no file under the
    final name (a cut transfer leaves `<file>.partial`, which the next call continues).
    """
    target = cache_path_for_url(url, cache_dir)
    if os.path.isfile(target):
        return target
    with _file_lock(target + ".lock"):
        if not os.path.isfile(target):  # another process may have finished it while we waited
            _download(url, target, sys.stderr.isatty() if progress is None else progress)
    return target


def _timeout() -> float:
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    try:
        value = float(text) if text else 60.0
    except ValueError:
        raise ValueError(f"{TIMEOUT_ENV}={text!r} is not a number of seconds.") from None
    if value <= 0:
        raise ValueError(f"{TIMEOUT_ENV}={text!r} must be a positive number of seconds.")
    return value


def _expected_sha256(url: str) -> Optional[str]:
    """The hash a URL announces in its fragment, `...#sha256=<64 hex digits>` (pip's convention)."""
    fragment = urllib.parse.urlsplit(url).fragment
    if not fragment:
        return None
    found = re.fullmatch(r"sha256=([0-9a-fA-F]{64})", fragment)
    if not found:
        raise ValueError(f"URL {url!r}: the only fragment understood is #sha256=<64 hex digits>.")
    return found.group(1).lower()


def _response_size(response, offset: int) -> Tuple[int, Optional[int]]:
    """(where the body starts in the file, the whole file's size or None) of a 200/206 answer."""
    if response.status == 206:
        found = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", "").strip())
        if not found or int(found.group(1)) != offset:
            return -1, None  # a range we did not ask for: start again
        return offset, None if found.group(2) == "*" else int(found.group(2))
    length = response.headers.get("Content-Length")
    return 0, int(length) if length and length.isdigit() else None


def _download(url: str, target: str, progress: bool) -> None:
    """Fetch `url` into `target + ".partial"` (continuing it if present), check it, rename it to `target`."""
    advice = (
        f"Check the URL, or fetch the file another way and put it at {target} (the download cache), "
        "or set MODEL.WEIGHTS to a local file."
    )
    retry = "Run again to continue the download (or restart it, where the server allows no ranges)"
    os.makedirs(os.path.dirname(target), exist_ok=True)
    partial = target + PARTIAL_SUFFIX
    sha256, timeout = _expected_sha256(url), _timeout()
    fetch_url = urllib.parse.urlunsplit(urllib.parse.urlsplit(url)._replace(fragment=""))
    have = os.path.getsize(partial) if os.path.isfile(partial) else 0
    for attempt in range(2):  # the second one starts from scratch when the server refuses the range
        headers = {"User-Agent": "mask2former-dinat", "Accept-Encoding": "identity"}
        if have:
            headers["Range"] = f"bytes={have}-"
            logger.info("Continuing the download of %s at byte %d", url, have)
        else:
            logger.info("Downloading %s to %s", url, target)
        try:
            response = urllib.request.urlopen(urllib.request.Request(fetch_url, headers=headers), timeout=timeout)
        except urllib.error.HTTPError as e:
            if e.code == 416 and have and attempt == 0:  # the part is no prefix the server knows
                os.unlink(partial)
                have = 0
                continue
            raise CheckpointDownloadError(f"Could not download {url}: HTTP {e.code} {e.reason}. {advice}") from None
        except urllib.error.URLError as e:
            raise CheckpointDownloadError(f"Could not reach {url}: {e.reason}. {advice}") from None
        except (OSError, http.client.HTTPException) as e:  # timeout, reset before the headers
            raise CheckpointDownloadError(f"Could not download {url} ({e}). {retry}. {advice}") from None
        with response:
            start, total = _response_size(response, have)
            if start < 0:
                have = 0
                with contextlib.suppress(OSError):
                    os.unlink(partial)
                continue
            if start == 0 and "html" in response.headers.get("Content-Type", "").lower():
                raise CheckpointDownloadError(
                    f"{url} returned a web page ({response.headers.get('Content-Type')}), not a checkpoint file. {advice}"
                )
            have = _receive(response, partial, start, total, url, progress, retry)
        break
    if total is not None and have != total:
        raise CheckpointDownloadError(
            f"Download of {url} stopped after {have} of {total} bytes; the part is kept at {partial}. {retry}."
        )
    with open(partial, "rb") as f:
        if f.read(64).lstrip()[:1] == b"<":
            os.unlink(partial)
            raise CheckpointDownloadError(f"{url} returned a web page (HTML/XML), not a checkpoint file. {advice}")
    if sha256 is not None:
        actual = _sha256_of(partial)
        if actual != sha256:
            os.unlink(partial)
            raise CheckpointDownloadError(
                f"{url}: the downloaded file's SHA-256 is {actual}, but the URL says {sha256}; the file was "
                f"deleted. Run again to download it again; if this repeats, the file on the server changed. {advice}"
            )
    os.replace(partial, target)


def _receive(response, partial: str, start: int, total: Optional[int], url: str, progress: bool, retry: str) -> int:
    """Write the body to `partial` from byte `start` on (fsynced); returns the bytes it then holds."""
    bar = None
    if progress:
        import tqdm

        bar = tqdm.tqdm(total=total, initial=start, unit="B", unit_scale=True, desc=os.path.basename(partial))
    have = start
    try:
        with open(partial, "r+b" if start else "wb") as f:
            f.seek(start)
            f.truncate()
            try:
                while True:
                    chunk = response.read1(_CHUNK)  # what has arrived: a stall loses nothing
                    if not chunk:
                        break
                    f.write(chunk)
                    have += len(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
            except (OSError, http.client.HTTPException, socket.timeout) as e:
                f.flush()
                os.fsync(f.fileno())
                if isinstance(e, http.client.IncompleteRead) and total is not None:
                    have = os.path.getsize(partial)
                what = f"{have} of {total} bytes" if total is not None else f"{have} bytes"
                raise CheckpointDownloadError(
                    f"Download of {url} stopped after {what} ({e.__class__.__name__}: {e}); the part is kept at "
                    f"{partial}. {retry}."
                ) from None
            f.flush()
            os.fsync(f.fileno())
    finally:
        if bar is not None:
            bar.close()
    return have


def _sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_weights_path(path: str, *, cache_dir: Optional[str] = None, path_manager=None) -> str:
    """A local file for MODEL.WEIGHTS: an existing path as is, an http(s) URL via the download
    cache, another `scheme://` through detectron2's PathManager (e.g. detectron2://)."""
    expanded = os.path.expanduser(path)
    if os.path.isfile(expanded):
        return expanded
    if _is_url(path):
        return cached_download(path, cache_dir)
    if "://" in path and path_manager is not None:
        return path_manager.get_local_path(path)
    if os.path.isdir(expanded):
        raise IsADirectoryError(f"Checkpoint path {path!r} is a folder; MODEL.WEIGHTS must name a checkpoint file.")
    raise FileNotFoundError(
        f"Checkpoint file not found: {path!r}. MODEL.WEIGHTS must be an existing local file or an http(s) URL."
    )
