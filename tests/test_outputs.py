"""Output paths are checked before any work, and no mistake in a path destroys a file."""

import hashlib
import os
import stat
import zipfile

import numpy as np
import pytest

import streamtrain
from streamtrain import ConfigError, DataError
from streamtrain.cli import main
from streamtrain.outputs import KINDS, check_output, is_model_file


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """A small zarr store and HDF5 file, made once: tests only read them."""
    d = tmp_path_factory.mktemp("stores")
    streamtrain.make_data(d / "d.zarr", m=2000, n_x=5, seed=0)
    streamtrain.make_data(d / "v.h5", m=2000, n_x=5, seed=0)
    return d


@pytest.fixture
def no_training(monkeypatch):
    """Training that fails the test if it starts: the checks must come first."""

    def fit(*args, **kwargs):
        raise AssertionError("training started before the output paths were checked")

    monkeypatch.setattr(streamtrain.train, "fit", fit)


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, err, *fragments):
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("streamtrain: error: "), err
    assert ".tmp" not in lines[0]
    for fragment in fragments:
        assert str(fragment) in lines[0], lines[0]
    return lines[0]


def digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_fit_refuses_to_write_the_model_over_its_training_file(capsys, stores, no_training):
    before = digest(stores / "v.h5")
    code, out, err = run(capsys, "fit", stores / "v.h5", "--out", stores / "v.h5")
    one_line_error(code, err, stores / "v.h5", "is the data being read")
    assert digest(stores / "v.h5") == before and "epoch" not in out


def test_a_hard_link_to_the_data_is_the_data(capsys, stores, tmp_path, no_training):
    os.link(stores / "v.h5", tmp_path / "link.npz")
    code, _, err = run(capsys, "fit", stores / "v.h5", "--out", tmp_path / "link.npz")
    one_line_error(code, err, "link.npz", "is the data being read")


@pytest.mark.parametrize(
    "out, fragments",
    [
        ("d.zarr/m.npz", ["d.zarr/m.npz", "inside the data store"]),
        ("d.zarr", ["d.zarr", "is the data being read"]),
        ("missing/m.npz", ["missing/m.npz", "does not exist"]),
        ("a_dir", ["a_dir", "is a directory"]),
        ("a_file/m.npz", ["a_file/m.npz", "is not a directory"]),
    ],
)
def test_a_bad_out_fails_at_once_naming_the_path(capsys, stores, tmp_path, no_training, out, fragments):
    (tmp_path / "a_dir").mkdir()
    (tmp_path / "a_file").write_text("x")
    target = (stores if out.startswith("d.zarr") else tmp_path) / out
    code, out_text, err = run(capsys, "fit", stores / "d.zarr", "--out", target)
    one_line_error(code, err, *fragments)
    assert "epoch" not in out_text
    assert sorted(os.listdir(tmp_path)) == ["a_dir", "a_file"]  # no temporary file left anywhere


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into any directory")
def test_out_in_a_read_only_directory_fails_at_once(capsys, stores, tmp_path, no_training):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        code, _, err = run(capsys, "fit", stores / "d.zarr", "--out", ro / "m.npz")
    finally:
        ro.chmod(0o700)
    one_line_error(code, err, ro / "m.npz", "not writable")


def test_an_unwritable_directory_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # as a non-root user in a read-only directory
    with pytest.raises(DataError, match=rf"{tmp_path / 'm.npz'}: {tmp_path} is not writable"):
        check_output(tmp_path / "m.npz", "model")


@pytest.mark.parametrize("path", ["", "m\0.npz", 3, b"m.npz"])
@pytest.mark.parametrize("kind", ["model", "metrics", "checkpoint-dir"])
def test_a_path_that_names_nothing_is_a_config_error(path, kind):
    # Were ValueError (embedded null byte), TypeError, or "" taken for the current directory.
    with pytest.raises(ConfigError, match=f"the {kind} path must name a file or directory, got "):
        check_output(path, kind)


def test_fit_checks_its_metrics_path_before_training(stores):
    with pytest.raises(ConfigError, match="the metrics path must name a file or directory"):
        streamtrain.fit(stores / "d.zarr", metrics="m\0.jsonl", epochs=1)


def test_the_default_out_is_checked_too(capsys, tmp_path, no_training):
    streamtrain.make_data(tmp_path / "d.zarr", m=500, n_x=2, seed=0)
    (tmp_path / "d-model.npz").write_text("my notes")
    code, _, err = run(capsys, "fit", tmp_path / "d.zarr")
    one_line_error(code, err, "d-model.npz", "not a streamtrain model file")
    assert (tmp_path / "d-model.npz").read_text() == "my notes"


@pytest.mark.parametrize("content", [b"my notes", b"", None])
def test_an_existing_file_that_is_not_a_model_is_kept(capsys, stores, tmp_path, no_training, content):
    path = tmp_path / "m.npz"
    if content is None:
        np.savez(path, W1=np.zeros((1, 5)))  # an npz, but not ours
    else:
        path.write_bytes(content)
    before = digest(path)
    code, _, err = run(capsys, "fit", stores / "d.zarr", "--out", path)
    one_line_error(code, err, path, "not a streamtrain model file")
    assert digest(path) == before


def test_an_existing_model_file_is_replaced_and_keeps_its_mode(capsys, stores, tmp_path):
    path = tmp_path / "m.npz"
    assert run(capsys, "fit", stores / "d.zarr", "--out", path, "--epochs", 1)[0] == 0
    path.chmod(0o640)
    before = digest(path)
    code, _, err = run(capsys, "fit", stores / "d.zarr", "--out", path, "--epochs", 2)
    assert code == 0, err
    assert digest(path) != before and len(streamtrain.load(path).history) == 2
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002], ids=oct)
def test_a_new_model_file_follows_the_umask(capsys, stores, tmp_path, umask):
    old = os.umask(umask)
    try:
        code, _, err = run(capsys, "fit", stores / "d.zarr", "--out", tmp_path / "m.npz", "--epochs", 1)
    finally:
        os.umask(old)
    assert code == 0, err
    assert stat.S_IMODE(os.stat(tmp_path / "m.npz").st_mode) == 0o666 & ~umask


@pytest.mark.parametrize("content", ["notes\n", '{"loss": 1}\n', "[1, 2]\n", "\n"])
def test_metrics_refuses_a_file_that_is_not_epoch_json_lines(capsys, stores, tmp_path, no_training, content):
    (tmp_path / "m.jsonl").write_text(content)
    code, _, err = run(capsys, "fit", stores / "d.zarr", "--out", tmp_path / "m.npz", "--metrics", tmp_path / "m.jsonl")
    one_line_error(code, err, "m.jsonl", "not a streamtrain metrics file")
    assert (tmp_path / "m.jsonl").read_text() == content and not (tmp_path / "m.npz").exists()


@pytest.mark.parametrize("content", ["", '{"epoch": 1, "loss": 0.5}\n'])
def test_metrics_appends_to_an_empty_or_metrics_file(capsys, stores, tmp_path, content):
    (tmp_path / "m.jsonl").write_text(content)
    argv = ["fit", stores / "d.zarr", "--out", tmp_path / "m.npz", "--metrics", tmp_path / "m.jsonl", "--epochs", 1]
    assert run(capsys, *argv)[0] == 0
    assert (tmp_path / "m.jsonl").read_text().startswith(content)
    assert len((tmp_path / "m.jsonl").read_text().splitlines()) == len(content.splitlines()) + 1


def test_metrics_and_out_must_differ(capsys, stores, tmp_path, no_training):
    code, _, err = run(capsys, "fit", stores / "d.zarr", "--out", tmp_path / "m", "--metrics", tmp_path / "m")
    one_line_error(code, err, "--metrics and --out name the same file")


def test_metrics_inside_the_data_is_refused(capsys, stores, tmp_path, no_training):
    code, _, err = run(
        capsys, "fit", stores / "d.zarr", "--out", tmp_path / "m.npz", "--metrics", stores / "d.zarr" / "m.jsonl"
    )
    one_line_error(code, err, "m.jsonl", "inside the data store")


def test_fit_result_save_refuses_a_file_that_is_not_a_model(stores, tmp_path):
    result = streamtrain.fit(stores / "d.zarr", epochs=1)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match=r"notes\.txt: exists and is not a streamtrain model file"):
        result.save(tmp_path / "notes.txt")
    assert (tmp_path / "notes.txt").read_text() == "mine"
    with pytest.raises(DataError, match="is the data being read"):
        result.save(stores / "d.zarr")
    result.save(tmp_path / "m.npz")
    result.save(tmp_path / "m.npz")  # a model file is replaced
    assert is_model_file(tmp_path / "m.npz")


def test_a_model_file_is_recognised_from_its_metadata_entry_alone(tmp_path):
    """A hostile header claiming a huge metadata array is refused before anything is allocated."""
    huge = np.lib.format.header_data_from_array_1_0(np.array("x"))
    huge["descr"] = "<U1000000000"
    with zipfile.ZipFile(tmp_path / "evil.npz", "w") as z, z.open("__meta__.npy", "w") as f:
        np.lib.format.write_array_header_1_0(f, huge)
        f.write(b"{}")
    assert not is_model_file(tmp_path / "evil.npz")
    np.savez(tmp_path / "tagged.npz", __meta__=np.array('{"format": "something-else"}'))
    assert not is_model_file(tmp_path / "tagged.npz")
    np.savez(tmp_path / "ours.npz", __meta__=np.array('{"format": "streamtrain-model"}'))
    assert is_model_file(tmp_path / "ours.npz")


def test_a_file_named_like_the_data_plus_a_suffix_is_not_inside_it(stores):
    assert check_output(stores / "d.zarr.npz", "model", data=stores / "d.zarr") == str(stores / "d.zarr.npz")


def test_checkpoint_dir_kind(stores, tmp_path):
    assert check_output(tmp_path / "ckpt", "checkpoint-dir", data=stores / "d.zarr") == str(tmp_path / "ckpt")
    (tmp_path / "ckpt").mkdir()
    assert check_output(tmp_path / "ckpt", "checkpoint-dir") == str(tmp_path / "ckpt")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="file: exists and is not a directory"):
        check_output(tmp_path / "file", "checkpoint-dir")
    with pytest.raises(DataError, match="inside the data store"):
        check_output(stores / "d.zarr" / "ckpt", "checkpoint-dir", data=stores / "d.zarr")
    with pytest.raises(DataError, match="missing does not exist"):
        check_output(tmp_path / "missing" / "ckpt", "checkpoint-dir")


def test_store_kind_needs_overwrite_and_a_store(stores, tmp_path):
    with pytest.raises(DataError, match="already exists"):
        check_output(stores / "d.zarr", "store")
    assert check_output(stores / "d.zarr/", "store", overwrite=True) == str(stores / "d.zarr")
    assert check_output(stores / "v.h5", "store", overwrite=True) == str(stores / "v.h5")
    (tmp_path / "photos").mkdir()
    with pytest.raises(DataError, match="photos: is neither a Zarr group nor an HDF5 file"):
        check_output(tmp_path / "photos", "store", overwrite=True)


def test_image_kind_needs_overwrite_and_a_png(tmp_path):
    png, text = tmp_path / "c.png", tmp_path / "notes.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(50))
    text.write_text("notes")
    with pytest.raises(DataError, match="already exists"):
        check_output(png, "image")
    assert check_output(png, "image", overwrite=True) == str(png)
    with pytest.raises(DataError, match=r"notes\.png: exists and is not a PNG image; not replacing it"):
        check_output(text, "image", overwrite=True)
    assert check_output(tmp_path / "new.png", "image") == str(tmp_path / "new.png")


def test_kinds_are_a_table():
    assert set(KINDS) == {"model", "metrics", "store", "checkpoint-dir", "image"}
    with pytest.raises(ConfigError, match="unknown output kind 'cache'"):
        check_output("x", "cache")
