"""The checkpoint tests' download cache: a fresh folder per test, no pickle opt-in, a local test server."""
import pytest


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    path = tmp_path / "cache"
    monkeypatch.setenv("M2F_DINAT_CACHE", str(path))
    monkeypatch.delenv("M2F_DINAT_ALLOW_PICKLE", raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")  # the test server is local even behind a proxy
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    return path
