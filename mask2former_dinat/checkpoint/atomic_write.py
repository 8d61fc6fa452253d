"""Atomic file writes: readers see the old file or the whole new one, never a partial one."""
import contextlib
import os
import secrets

__all__ = ["atomic_write"]


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "wb"):
    """Open a temporary file beside `path`; on a clean exit it replaces `path`, on an error it is deleted.

    Readers never see a partial file under `path`. The temporary name starts with "." and ends
    in ".tmp", so checkpoint listings (`*.pth`) ignore it.
    """
    path = os.path.abspath(path)
    directory, base = os.path.split(path)
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{base}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # 0o666 & ~umask, like open()
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
