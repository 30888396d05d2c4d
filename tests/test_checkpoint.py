"""Model files: atomic writes, no pickle, clear errors for files that are not ours."""

import json
import os
import re
import stat
import subprocess
import sys

import numpy as np
import pytest

import streamtrain
from streamtrain import DataError
from streamtrain.checkpoint import VERSION, atomic_write, is_temp_name, load_model, pid_alive, save_model


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


def _dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_temporary_names_carry_the_pid_and_are_never_taken_for_files(tmp_path, monkeypatch):
    names = []
    replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (names.append(os.path.basename(src)), replace(src, dst)))
    save_model(tmp_path / "m.npz", _params(), {"model": "logistic"})
    [name] = names
    assert re.fullmatch(rf"\.m\.npz\.{os.getpid()}\.[0-9a-f]+\.tmp", name) and is_temp_name(name)
    assert not is_temp_name("m.npz") and not is_temp_name("m.tmp") and not is_temp_name(".m.npz")


def test_stale_temporaries_of_dead_writers_are_removed_at_the_next_write(tmp_path):
    dead, alive = _dead_pid(), os.getppid()
    stale = tmp_path / f".m.npz.{dead}.x1.tmp"
    kept = [
        tmp_path / f".m.npz.{alive}.x2.tmp",  # another process still writing it
        tmp_path / f".other.npz.{dead}.x3.tmp",  # another file's
        tmp_path / ".m.npz.abcd1234.tmp",  # no pid in the name: whose, is unknown
        tmp_path / f"m.npz.{dead}.x4.tmp",  # not hidden: not ours
    ]
    for path in [stale, *kept]:
        path.write_bytes(b"partial model")
    save_model(tmp_path / "m.npz", _params(), {"model": "logistic"})
    assert sorted(os.listdir(tmp_path)) == sorted(["m.npz", *(p.name for p in kept)])


def test_a_process_of_another_user_counts_as_alive(monkeypatch):
    def kill(pid, signum):  # what os.kill(pid, 0) raises for another user's process
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "kill", kill)
    assert pid_alive(1234)


@pytest.mark.parametrize("umask", [0o022, 0o077], ids=oct)
def test_a_new_file_follows_the_umask_and_an_existing_one_keeps_its_mode(tmp_path, umask):
    old = os.umask(umask)
    try:
        atomic_write(tmp_path / "f", lambda f: f.write(b"1"))
        assert stat.S_IMODE(os.stat(tmp_path / "f").st_mode) == 0o666 & ~umask
        os.chmod(tmp_path / "f", 0o604)
        atomic_write(tmp_path / "f", lambda f: f.write(b"2"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "f").st_mode) == 0o604 and (tmp_path / "f").read_bytes() == b"2"


def test_the_temporary_of_a_writer_killed_mid_write_goes_at_the_next_write(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(streamtrain.__file__)))
    writer = (
        "import sys, time\n"
        "from streamtrain.checkpoint import atomic_write\n"
        "def write(f):\n"
        "    f.write(b'x' * 4096); f.flush(); print('writing', flush=True); time.sleep(60)\n"
        "atomic_write(sys.argv[1], write)\n"
    )
    env = {**os.environ, "PYTHONPATH": root}
    child = subprocess.Popen([sys.executable, "-c", writer, tmp_path / "m.npz"], stdout=subprocess.PIPE, env=env)
    try:
        assert child.stdout.readline() == b"writing\n"
    finally:
        child.kill()  # SIGKILL: no cleanup runs
        child.wait()
    [temp] = os.listdir(tmp_path)
    assert is_temp_name(temp) and f".{child.pid}." in temp
    save_model(tmp_path / "m.npz", _params(), {"model": "logistic"})
    assert os.listdir(tmp_path) == ["m.npz"]


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
    with pytest.raises(DataError, match=rf"x\.npz: written by a newer streamtrain \(file version {VERSION + 1};"):
        load_model(tmp_path / "x.npz")


def test_a_parameter_named_like_the_metadata_is_refused(tmp_path):
    with pytest.raises(ValueError, match="reserved"):
        save_model(tmp_path / "m.npz", {**_params(), "__meta__": np.zeros(1)}, {})
    assert not os.listdir(tmp_path)
