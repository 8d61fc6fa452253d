"""MODEL.WEIGHTS as an http(s) URL: downloaded once into the cache, failures named and left out of it."""
import os
import socket

import pytest

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


def test_cut_download_leaves_no_file_under_the_final_name_and_retry_succeeds(tmp_path, cache_dir):
    data = checkpoint_bytes(tmp_path, {"model": TinyModel().state_dict()})
    route = Route(data, send_only=len(data) // 2)
    with FileServer({"/w.pth": route}) as server:
        url = server.url("/w.pth")
        with pytest.raises(CheckpointDownloadError, match=rf"{url} stopped after {len(data) // 2} of {len(data)} bytes"):
            Mask2FormerCheckpointer(TinyModel()).load(url)
        assert not os.path.exists(cache_path_for_url(url))
        assert temp_files(cache_dir) == []

        route.send_only = None
        Mask2FormerCheckpointer(TinyModel()).load(url)
        assert server.requests["/w.pth"] == 2
    assert open(cache_path_for_url(url), "rb").read() == data


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
