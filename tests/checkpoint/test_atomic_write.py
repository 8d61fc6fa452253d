"""atomic_write: the file under its name is the old one or the whole new one, never a partial one."""
import os

import pytest

from mask2former_dinat.checkpoint import atomic_write


def test_clean_exit_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "out.bin"
    with atomic_write(str(path)) as f:
        f.write(b"new")
    assert path.read_bytes() == b"new"
    assert os.listdir(path.parent) == ["out.bin"]


def test_error_inside_keeps_the_old_file_and_deletes_the_temporary(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    with pytest.raises(OSError, match="disk full"):
        with atomic_write(str(path), "w") as f:
            f.write("half")
            raise OSError("disk full")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.txt"]
