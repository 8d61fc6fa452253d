"""MODEL.WEIGHTS as an http(s) URL: downloaded once into the cache, failures named and left out of it."""
import hashlib
import io
import os
import socket
import time

import pytest
import torch

from helpers.checkpoint_models import TinyModel, assert_same_weights, checkpoint_bytes, temp_files
from helpers.http_server import FileServer, Route
from mask2former_dinat.checkpoint import (
    CheckpointDownloadError,
    Mask2FormerCheckpointer,
    cache_path_for_url,
    default_cache_dir,
)


# --- URLs and the cache --------------------------------------------------------------------------


def test_cache_location_follows_env_and_mirrors_the_url(tmp_path, monkeypatch):
    monkeypatch.setenv("M2F_DINAT_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == str(tmp_path / "c")
    url = "https://shi-labs.com/projects/dinat/checkpoints/m2f/mask2former_dinat_large_coco_panoptic.pth"
    assert cache_path_for_url(url) == str(
        tmp_path / "c" / "shi-labs.com" / "projects/dinat/checkpoints/m2f/mask2former_dinat_large_coco_panoptic.pth"
    )
    with_query = cache_path_for_url("http://h:8080/a/w.pkl?token=1")
    assert with_query.startswith(str(tmp_path / "c" / "h_8080" / "a" / "w-")) and with_query.endswith(".pkl")
    monkeypatch.delenv("M2F_DINAT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == str(tmp_path / "xdg" / "mask2former_dinat")
    with pytest.raises(ValueError, match="does not name a file"):
        cache_path_for_url("https://example.com/")


def test_url_is_downloaded_once_then_loaded_from_the_cache_without_network(tmp_path, cache_dir):
    source = TinyModel()
    data = checkpoint_bytes(tmp_path, {"model": source.state_dict(), "iteration": 7})
    with FileServer({"/m2f/weights.pth": Route(data)}) as server:
        url = server.url("/m2f/weights.pth")
        first, second = TinyModel(), TinyModel()
        assert Mask2FormerCheckpointer(first).load(url) == {"iteration": 7}
        Mask2FormerCheckpointer(second).load(url)
        assert server.requests["/m2f/weights.pth"] == 1
    assert_same_weights(first, source)
    assert_same_weights(second, source)
    cached = cache_path_for_url(url)
    assert open(cached, "rb").read() == data

    third = TinyModel()  # the server is gone: only the cache can serve this
    Mask2FormerCheckpointer(third).load(url)
    assert_same_weights(third, source)


def _partial(url):
    return cache_path_for_url(url) + ".partial"


@pytest.mark.parametrize("ranges", [True, False], ids=["server-allows-ranges", "server-ignores-ranges"])
def test_cut_download_leaves_no_complete_looking_file_and_the_next_run_finishes_it(tmp_path, cache_dir, ranges):
    data = checkpoint_bytes(tmp_path, {"model": TinyModel().state_dict()})
    half = len(data) // 2
    route = Route(data, send_only=half, ranges=ranges)
    with FileServer({"/w.pth": route}) as server:
        url = server.url("/w.pth")
        with pytest.raises(CheckpointDownloadError, match=rf"{url} stopped after {half} of {len(data)} bytes"):
            Mask2FormerCheckpointer(TinyModel()).load(url)
        assert not os.path.exists(cache_path_for_url(url))
        assert open(_partial(url), "rb").read() == data[:half]  # kept under a name nothing loads

        route.send_only = None
        source = TinyModel()
        source.load_state_dict(torch.load(io.BytesIO(data), weights_only=True)["model"])
        loaded = TinyModel()
        Mask2FormerCheckpointer(loaded).load(url)
        assert server.range_headers == [None, f"bytes={half}-"]
    assert_same_weights(loaded, source)
    assert open(cache_path_for_url(url), "rb").read() == data
    assert not os.path.exists(_partial(url)) and temp_files(cache_dir) == []


def test_stalled_download_times_out_naming_the_url(tmp_path, cache_dir, monkeypatch):
    monkeypatch.setenv("M2F_DINAT_DOWNLOAD_TIMEOUT", "0.5")
    data = checkpoint_bytes(tmp_path, {"model": TinyModel().state_dict()})
    with FileServer({"/w.pth": Route(data, send_only=100, hang=True)}) as server:
        url = server.url("/w.pth")
        started = time.monotonic()
        with pytest.raises(CheckpointDownloadError, match=rf"{url} stopped after 100 of {len(data)} bytes.*timed out"):
            Mask2FormerCheckpointer(TinyModel()).load(url)
        assert time.monotonic() - started < 10
    assert not os.path.exists(cache_path_for_url(url))


def test_sha256_in_the_url_is_checked_before_the_file_enters_the_cache(tmp_path, cache_dir):
    data = checkpoint_bytes(tmp_path, {"model": TinyModel().state_dict()})
    good, bad = hashlib.sha256(data).hexdigest(), hashlib.sha256(b"another file").hexdigest()
    with FileServer({"/w.pth": Route(data)}) as server:
        wrong = server.url("/w.pth") + f"#sha256={bad}"
        with pytest.raises(CheckpointDownloadError, match=rf"SHA-256 is {good}, but the URL says {bad}"):
            Mask2FormerCheckpointer(TinyModel()).load(wrong)
        assert not os.path.exists(cache_path_for_url(wrong)) and not os.path.exists(_partial(wrong))

        right = server.url("/w.pth") + f"#sha256={good}"
        Mask2FormerCheckpointer(TinyModel()).load(right)
    assert open(cache_path_for_url(right), "rb").read() == data


def test_http_error_names_the_url_and_status(cache_dir):
    with FileServer({}) as server:
        url = server.url("/missing/model.pth")
        with pytest.raises(CheckpointDownloadError, match=rf"Could not download {url}: HTTP 404"):
            Mask2FormerCheckpointer(TinyModel()).load(url)
    assert not os.path.exists(cache_path_for_url(url))


def test_web_page_served_instead_of_a_checkpoint_is_refused(cache_dir):
    page = b"<!DOCTYPE html><html><body>Sign in</body></html>"
    with FileServer({"/w.pth": Route(page, content_type="text/html")}) as server:
        url = server.url("/w.pth")
        with pytest.raises(CheckpointDownloadError, match="returned a web page"):
            Mask2FormerCheckpointer(TinyModel()).load(url)
    assert not os.path.exists(cache_path_for_url(url)) and temp_files(cache_dir) == []


def test_unreachable_server_error_names_the_url(cache_dir):
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/w.pth"
    with pytest.raises(CheckpointDownloadError, match=f"Could not reach {url}"):
        Mask2FormerCheckpointer(TinyModel()).load(url)
