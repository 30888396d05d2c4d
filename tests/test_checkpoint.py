"""Model files: atomic writes, no pickle, clear errors for files that are not ours."""

import json
import os
import stat

import numpy as np
import pytest

from streamtrain import DataError
from streamtrain.checkpoint import VERSION, atomic_write, load_model, save_model


def _params():
    return {"W1": np.arange(3, dtype=np.float32).reshape(1, 3), "b1": np.full((1, 1), 0.5, np.float32)}


def test_round_trip_keeps_arrays_dtypes_and_metadata(tmp_path):
    meta = {"model": "logistic", "config": {"lr": 0.1, "batch_size": 8}, "data": {"m": 10}}
    save_model(tmp_path / "m.npz", _params(), meta)
    params, loaded = load_model(tmp_path / "m.npz")
    assert params.keys() == _params().keys()
    for k, v in _params().items():
        np.testing.assert_array_equal(params[k], v)
        assert params[k].dtype == v.dtype
    assert {k: loaded[k] for k in meta} == meta
    assert loaded["format"] == "streamtrain-model" and loaded["version"] == VERSION


def test_writes_exactly_the_named_file_and_leaves_no_temporary(tmp_path):
    save_model(tmp_path / "model", _params(), {"model": "logistic"})  # no .npz appended
    assert os.listdir(tmp_path) == ["model"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "m.npz"
    save_model(target, _params(), {"model": "logistic", "tag": "old"})

    def broken(f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, broken)
    assert os.listdir(tmp_path) == ["m.npz"]
    assert load_model(target)[1]["tag"] == "old"


def test_object_arrays_are_refused_not_unpickled(tmp_path):
    np.savez(tmp_path / "evil.npz", W1=np.array([object()], dtype=object))
    with pytest.raises(DataError, match=r"evil\.npz: not a streamtrain model file"):
        load_model(tmp_path / "evil.npz")


@pytest.mark.parametrize("content", [b"", b"not a zip file", None])
def test_other_files_are_data_errors(tmp_path, content):
    path = tmp_path / "x.npz"
    if content is None:
        np.savez(path, W1=np.zeros((1, 2)))  # an npz, but no metadata
    else:
        path.write_bytes(content)
    with pytest.raises(DataError, match=r"x\.npz: not a streamtrain model file"):
        load_model(path)


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no such model file"):
        load_model(tmp_path / "nope.npz")


@pytest.mark.parametrize(
    "meta", [{"format": "other-tool", "version": VERSION}, {"version": VERSION}, ["streamtrain-model"]]
)
def test_metadata_of_another_format_is_a_data_error(tmp_path, meta):
    np.savez(tmp_path / "x.npz", **_params(), __meta__=np.array(json.dumps(meta)))
    with pytest.raises(DataError, match=r"x\.npz: not a streamtrain model file \(wrong format tag\)"):
        load_model(tmp_path / "x.npz")


def test_the_file_is_fsynced_before_its_rename_and_the_directory_after(tmp_path, monkeypatch):
    # Without the first fsync a crash can leave the new name on empty or partial content;
    # without the second, the rename itself can be lost.
    events, real_fsync = [], os.fsync

    def fsync(fd):
        st = os.fstat(fd)
        events.append(("fsync dir" if stat.S_ISDIR(st.st_mode) else "fsync file", st.st_ino))
        real_fsync(fd)

    def recorded(rename):
        def call(src, dst, *args, **kwargs):
            events.append(("rename", os.stat(src, dir_fd=kwargs.get("src_dir_fd")).st_ino))
            rename(src, dst, *args, **kwargs)

        return call

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", recorded(os.replace))
    monkeypatch.setattr(os, "rename", recorded(os.rename))
    target = tmp_path / "m.npz"
    save_model(target, _params(), {"model": "logistic"})
    written = ("rename", os.stat(target).st_ino)  # the rename that put the file in place
    assert events.count(written) == 1
    at = events.index(written)
    assert ("fsync file", written[1]) in events[:at]
    assert ("fsync dir", os.stat(tmp_path).st_ino) in events[at + 1 :]


def test_a_file_of_a_newer_version_is_a_data_error(tmp_path):
    meta = {"format": "streamtrain-model", "version": VERSION + 1}
    np.savez(tmp_path / "x.npz", **_params(), __meta__=np.array(json.dumps(meta)))
    with pytest.raises(DataError, match=rf"x\.npz: written by a newer streamtrain \(file version {VERSION + 1}\)"):
        load_model(tmp_path / "x.npz")


def test_a_parameter_named_like_the_metadata_is_refused(tmp_path):
    with pytest.raises(ValueError, match="reserved"):
        save_model(tmp_path / "m.npz", {**_params(), "__meta__": np.zeros(1)}, {})
    assert not os.listdir(tmp_path)
