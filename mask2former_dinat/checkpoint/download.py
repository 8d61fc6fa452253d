"""Checkpoints from http(s) URLs: downloaded once into a local cache, then read from there.

The transfer is iopath's `download` (what detectron2's PathManager uses for URLs); on top of it
the cache mirrors `<host>/<url path>`, one process per machine downloads a URL, a web page
served instead of a checkpoint is refused, and every failure says which URL and what to do.
"""
import contextlib
import hashlib
import http.client
import logging
import os
import re
import shutil
import sys
import tempfile
import urllib.error
import urllib.parse
from typing import Optional

from iopath.common.download import download

__all__ = [
    "CACHE_ENV",
    "CheckpointDownloadError",
    "cache_path_for_url",
    "cached_download",
    "default_cache_dir",
    "resolve_weights_path",
]

logger = logging.getLogger(__name__)

CACHE_ENV = "M2F_DINAT_CACHE"
_SNIFF_BYTES = 1 << 20


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
    Raises CheckpointDownloadError (naming the URL and the HTTP status) when the download fails
    or stops early; the cache then holds no file under the final name.
    """
    target = cache_path_for_url(url, cache_dir)
    if os.path.isfile(target):
        return target
    with _file_lock(target + ".lock"):
        if not os.path.isfile(target):  # another process may have finished it while we waited
            _download(url, target, sys.stderr.isatty() if progress is None else progress)
    return target


def _download(url: str, target: str, progress: bool) -> None:
    """Download into a private folder beside `target`, check the file, then move it to `target`."""
    advice = (
        f"Check the URL, or fetch the file another way and put it at {target} (the download cache), "
        "or set MODEL.WEIGHTS to a local file."
    )
    directory, name = os.path.split(target)
    os.makedirs(directory, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    try:
        logger.info("Downloading %s to %s", url, target)
        try:
            downloaded = download(url, staging, filename=name, progress=progress)
        except urllib.error.HTTPError as e:
            raise CheckpointDownloadError(f"Could not download {url}: HTTP {e.code} {e.reason}. {advice}") from None
        except urllib.error.ContentTooShortError as e:
            counts = re.search(r"got only (\d+) out of (\d+) bytes", str(e))
            sizes = f"{counts.group(1)} of {counts.group(2)} bytes" if counts else "part of the file"
            raise CheckpointDownloadError(
                f"Download of {url} stopped after {sizes}; nothing was saved. Try again."
            ) from None
        except urllib.error.URLError as e:
            raise CheckpointDownloadError(f"Could not reach {url}: {e.reason}. {advice}") from e
        except (OSError, http.client.HTTPException) as e:  # reset, timeout, cut chunked encoding
            raise CheckpointDownloadError(f"Download of {url} failed ({e}); nothing was saved. Try again.") from e
        with open(downloaded, "rb") as f:
            if f.read(_SNIFF_BYTES).lstrip()[:1] == b"<":
                raise CheckpointDownloadError(f"{url} returned a web page (HTML/XML), not a checkpoint file. {advice}")
        os.replace(downloaded, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


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
