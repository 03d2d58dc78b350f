"""VesselNN download: hash checks against a local copy (never the internet)."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading

import pooch
import pytest

from napari_vessel.data.datasets import (
    VESSELNN,
    VESSELNN_URL,
    fetch_vesselnn,
    iter_pairs,
    vesselnn_names,
)
from napari_vessel.errors import InputError

NAME = "burgess2014_noisySparseVessels"  # the smallest pair (about 1.4 MB)


def _mirror(vesselnn_dir, root, layout="repository", tamper=False):
    """Copy the NAME pair from the local copy into ``root``, laid out like the repository."""
    for item in (f for f in VESSELNN if f.name == NAME):
        target = root / (item.remote if layout == "repository" else item.local)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(vesselnn_dir / item.local, target)
        if tamper and item.kind == "label":
            data = bytearray(target.read_bytes())
            data[-1] ^= 0xFF
            target.write_bytes(bytes(data))
    return root


def test_table_describes_six_pairs_in_the_repository_layout():
    assert len(vesselnn_names()) == 6 and len(VESSELNN) == 12
    for item in VESSELNN:
        assert len(item.sha256) == 64 and int(item.sha256, 16) >= 0
        assert item.remote.startswith("denoised/" if item.kind == "image" else "labels/")
        assert item.local == f"{'images' if item.kind == 'image' else 'labels'}/{item.name}.tif"
    assert VESSELNN_URL.startswith("https://raw.githubusercontent.com/petteriTeikari/")


@pytest.mark.realdata
def test_local_copy_matches_the_table(vesselnn_dir):
    for item in VESSELNN:
        assert pooch.file_hash(str(vesselnn_dir / item.local)) == item.sha256, item.local
    assert [p[0] for p in iter_pairs(vesselnn_dir)] == sorted(vesselnn_names())


@pytest.mark.realdata
def test_fetch_from_file_url_then_keep(vesselnn_dir, tmp_path):
    source = _mirror(vesselnn_dir, tmp_path / "mirror")
    calls = []
    dest = fetch_vesselnn(tmp_path / "dest", source=source.as_uri(), names=[NAME],
                          progress=lambda f, m: calls.append(f))
    pairs = list(iter_pairs(dest))
    assert [(n, i.name, lbl.parent.name) for n, i, lbl in pairs] == [
        (NAME, f"{NAME}.tif", "labels")]
    assert calls[0] == 0.0 and calls[-1] == 1.0
    before = pairs[0][1].stat().st_mtime_ns
    (tmp_path / "empty").mkdir()  # files already in place with the right hash are kept
    fetch_vesselnn(dest, source=tmp_path / "empty", names=[NAME])
    assert pairs[0][1].stat().st_mtime_ns == before


@pytest.mark.realdata
def test_tampered_file_fails_the_hash_check(vesselnn_dir, tmp_path):
    source = _mirror(vesselnn_dir, tmp_path / "mirror", layout="local", tamper=True)
    with pytest.raises(InputError, match="SHA256"):
        fetch_vesselnn(tmp_path / "dest", source=source, names=[NAME])
    assert not list((tmp_path / "dest" / "labels").iterdir())  # nothing half-done kept


@pytest.fixture
def http_mirror(vesselnn_dir, tmp_path, monkeypatch):
    """Serve a mirror folder over HTTP on localhost; yields (folder, base URL)."""
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")
    root = _mirror(vesselnn_dir, tmp_path / "served")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.mark.realdata
def test_download_over_http_is_hash_checked(http_mirror, tmp_path):
    root, url = http_mirror
    dest = fetch_vesselnn(tmp_path / "dest", source=url, names=[NAME])
    assert [p[0] for p in iter_pairs(dest)] == [NAME]
    label = next(f for f in VESSELNN if f.name == NAME and f.kind == "label")
    (root / label.remote).write_bytes(b"not the published labels")
    (dest / label.local).unlink()
    with pytest.raises(InputError, match="SHA256"):
        fetch_vesselnn(dest, source=url, names=[NAME])
    with pytest.raises(InputError, match="cannot download"):
        fetch_vesselnn(tmp_path / "other", source=url + "missing/", names=[NAME])


def test_bad_requests(tmp_path):
    with pytest.raises(InputError, match="unknown VesselNN volume 'mouse'"):
        fetch_vesselnn(tmp_path, source=tmp_path, names=["mouse"])
    with pytest.raises(InputError, match="is not in"):
        fetch_vesselnn(tmp_path / "dest", source=tmp_path, names=[NAME])
    with pytest.raises(InputError, match="does not exist"):
        fetch_vesselnn(tmp_path / "dest", source=tmp_path / "absent")
    with pytest.raises(InputError, match="images/ and labels/"):
        list(iter_pairs(tmp_path))
