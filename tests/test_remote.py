"""Stores at URLs (``sources._remote``): a Zarr group in fsspec's in-memory filesystem (memory://)
passes the source contract, and trains, evaluates, predicts and converts exactly as the same group on
local disk, from the library and the command line; what a URL cannot do (HDF5, outputs, the direct
path, Dask workers in other processes for memory://) is a one-line error or a clean fallback."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import fsspec
import numpy as np
import pytest
import zarr
from conftest import logistic_xy, write_rows, write_zarr
from test_sources import SourceContract

import streamtrain
from streamtrain import ConfigError, DataError
from streamtrain.cli import main
from streamtrain.sources import open_source, parse_storage_options
from streamtrain.sources._remote import Remote

LIBRARY_PATH = "zarr library over fsspec (memory)"


@pytest.fixture
def memory_url():
    """``memory_url(name) -> "memory://<unique>/name"``; everything under it is removed after the test."""
    root = f"/{uuid.uuid4().hex}"
    yield lambda name: f"memory://{root}/{name}"
    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)


@pytest.fixture
def pair(tmp_path, memory_url):
    """``pair(X, Y, chunk, **kw) -> (local path, memory:// URL)`` of the same Zarr group (see ``write_zarr``)."""

    def make(X, Y, chunk, **kw):
        local, url = str(tmp_path / "d.zarr"), memory_url("d.zarr")
        for where in (local, url):
            write_zarr(where, X, Y, chunk, **kw)
        return local, url

    return make


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *fragments):
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("streamtrain: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


class TestMemoryZarrSource(SourceContract):
    format = "zarr"

    @pytest.fixture
    def make_source(self, memory_url):
        names = iter(range(1000))

        def make(X, Y, chunk, **kw):
            url = memory_url(f"d{next(names)}.zarr")
            write_zarr(url, X, Y, chunk)
            source = open_source(url, **kw)
            assert source.read_path == LIBRARY_PATH and source.direct is None
            return source

        return make


# -- the same results as on local disk --------------------------------------------------------


def with_weights(where, m):
    """An array W (1, m) of per-sample weights in the group at ``where``."""
    w = np.random.default_rng(5).uniform(0.5, 2.0, (1, m)).astype(np.float32)
    zarr.open_group(where, mode="a").create_array("W", shape=w.shape, chunks=(1, 64), dtype=w.dtype)[:] = w


@pytest.mark.parametrize(
    "options",
    [
        dict(shuffle="buffer", buffer_mb=0.01, batch_size=32, epochs=2),
        dict(batch_size="full", epochs=3, lr=1.0, scheduler="threads"),  # Dask tasks read the zarr arrays
        dict(weights="W", holdout=0.25, standardize=True, epochs=2, optimizer="adam", lr=0.01),
        dict(shards=2, sync_every=3, batch_size=32, epochs=2, scheduler="threads"),
    ],
    ids=["mini-batches", "full batch on dask", "weights holdout standardize", "shards"],
)
def test_fit_and_evaluate_at_a_url_equal_them_on_local_disk(pair, options):
    X, Y = logistic_xy(m=600, n_x=4, dtype=np.float32)
    local, url = pair(X, Y, 64)
    if "weights" in options:
        for where in (local, url):
            with_weights(where, 600)
    there, here = streamtrain.fit(url, seed=3, **options), streamtrain.fit(local, seed=3, **options)
    assert there.params.keys() == here.params.keys()
    for name in here.params:
        np.testing.assert_array_equal(there.params[name], here.params[name])
    assert [r.loss for r in there.history] == [r.loss for r in here.history]
    assert there.data["path"] == url and {**there.data, "path": local} == here.data
    assert streamtrain.evaluate(url, there) == streamtrain.evaluate(local, here)


def test_fit_and_evaluate_on_the_command_line_equal_them_on_local_disk(capsys, pair, tmp_path):
    local, url = pair(*logistic_xy(m=600, n_x=4, dtype=np.float32), 64)
    results = {}
    for name, data in (("url", url), ("local", local)):
        model = tmp_path / f"{name}.npz"
        code, out, err = run(capsys, "fit", data, "--epochs", 2, "--batch-size", 16, "--out", model)
        assert code == 0 and f"model written to {model}" in out, err
        code, out, _ = run(capsys, "evaluate", model, data, "--json")
        assert code == 0
        evaluated = json.loads(out)
        del evaluated["seconds"]
        results[name] = (streamtrain.load(model).params, evaluated)
    (params, evaluated), (local_params, local_evaluated) = results["url"], results["local"]
    for name in local_params:
        np.testing.assert_array_equal(params[name], local_params[name])
    assert evaluated == local_evaluated and evaluated["loss"] > 0


def test_inspect_predict_convert_and_compare_read_a_url(capsys, pair, tmp_path):
    local, url = pair(*logistic_xy(m=300, n_x=3, dtype=np.float32), 100)
    model = tmp_path / "m.npz"
    streamtrain.fit(local, epochs=1).save(model)
    report = {data: streamtrain.inspect(data) for data in (url, local)}
    assert report[url]["read_path"] == LIBRARY_PATH and report[local]["read_path"] == "direct"
    same = ("n_x", "m", "chunks", "stored_bytes", "labels")
    assert [report[url][k] for k in same] == [report[local][k] for k in same]
    code, out, _ = run(capsys, "inspect", url)
    assert code == 0 and out.startswith(f"{url}: zarr, read by {LIBRARY_PATH}")
    for name, data in (("url", url), ("local", local)):
        assert run(capsys, "predict", model, data, "--out", tmp_path / f"p-{name}.zarr", "--proba")[0] == 0
        assert run(capsys, "convert", data, tmp_path / f"c-{name}.zarr", "--chunk", 64)[0] == 0
    for made in ("p", "c"):
        there, here = (zarr.open_group(tmp_path / f"{made}-{name}.zarr", mode="r") for name in ("url", "local"))
        for key in here.array_keys():
            np.testing.assert_array_equal(there[key][:], here[key][:])
    assert zarr.open_group(tmp_path / "c-url.zarr").attrs["streamtrain"]["converted_from"] == url
    code, out, _ = run(capsys, "compare", model, url, "--json", "--batch-size", 32)
    assert code == 0 and json.loads(out)["data"] == url


def test_the_readme_example_at_memory_trains_as_on_disk(tmp_path):
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    block = readme[readme.index("Stores at URLs:") :].split("```python\n", 1)[1].split("```", 1)[0]
    here: dict = {}
    try:
        exec(block, here)
        assert here["source"].read_path == LIBRARY_PATH
        group = zarr.open_group(tmp_path / "demo.zarr", mode="w")
        for name in ("X", "Y"):
            group.create_array(name, data=here[name], chunks=(here[name].shape[0], 4096))
        on_disk = streamtrain.fit(tmp_path / "demo.zarr", batch_size=64, epochs=2)
        for name in on_disk.params:
            np.testing.assert_array_equal(here["result"].params[name], on_disk.params[name])
        loss = streamtrain.evaluate(here["source"], here["result"])["loss"]
        assert loss == streamtrain.evaluate(tmp_path / "demo.zarr", on_disk)["loss"]
        assert f"# {loss:.4f}, as for the same store on disk" in block
    finally:
        fsspec.filesystem("memory").rm("/demo.zarr", recursive=True)


def test_a_samples_first_store_at_a_url_reads_as_on_disk(tmp_path, memory_url):
    X, Y = logistic_xy(m=90, n_x=3, dtype=np.float32)
    write_rows(tmp_path / "r.zarr", X, Y, 32)
    write_rows(memory_url("r.zarr"), X, Y, 32)
    with (
        open_source(memory_url("r.zarr"), layout="rows") as there,
        open_source(tmp_path / "r.zarr", layout="rows") as here,
    ):
        for a, b in here.chunk_bounds:
            for got, expected in zip(there.read(a, b), here.read(a, b)):
                np.testing.assert_array_equal(got, expected)


def test_a_file_url_reads_through_fsspec_what_the_path_reads_directly(tmp_path):
    X, Y = logistic_xy(m=200, n_x=3, dtype=np.float32)
    path = write_zarr(tmp_path / "d.zarr", X, Y, 64)
    with open_source(f"file://{path}") as there, open_source(path) as here:
        assert (there.read_path, here.read_path) == ("zarr library over fsspec (file)", "direct")
        for a, b in here.chunk_bounds:
            np.testing.assert_array_equal(there.read(a, b)[0], here.read(a, b)[0])
        assert there.stored_bytes() == here.stored_bytes()


# -- chunks never written, and stamps --------------------------------------------------------


def test_chunks_never_written_at_a_url_are_found_as_on_disk(pair):
    local, url = pair(*logistic_xy(m=200, n_x=3, dtype=np.float32), 32, skip={"X": {2}, "Y": {0, 3}})
    errors = []
    for data in (url, local):
        with pytest.raises(DataError) as e:
            open_source(data)
        errors.append(str(e.value))
    assert errors[0].replace(url, local) == errors[1] and "samples 64..96" in errors[1]
    with pytest.warns(streamtrain.DataWarning):
        warned = [open_source(data, missing_chunks="fill").warnings for data in (url, local)]
    assert warned[0] == [w.replace(local, url) for w in warned[1]] and len(warned[0]) == 2


def test_a_store_at_a_url_keeps_its_stamp_and_a_change_is_named(memory_url):
    url = memory_url("d.zarr")
    X, Y = logistic_xy(m=200, n_x=3, dtype=np.float32)
    write_zarr(url, X, Y, 64)
    source = open_source(url)
    stamp = source.stamp()
    assert open_source(url).stamp() == stamp and set(json.loads(stamp)) == {"group metadata", "X", "Y"}
    zarr.open_group(url, mode="a")["X"][:, :64] = X[:, :64] + 1  # same size, written again
    with pytest.raises(DataError, match=r"d\.zarr: the store changed since training began \(X: files rewritten\)"):
        source.check_unchanged(stamp, since="training began")
    fsspec.filesystem("memory").rm(url.removeprefix("memory://") + "/Y/c/0/1")
    with pytest.raises(DataError, match=r"Y: 5 files, now 4"):
        source.check_unchanged(stamp)


# -- the options of a URL's filesystem ----------------------------------------------------------


def test_storage_options_parse_as_json_or_text():
    pairs = ["anon=true", "n=3", "key=abc", 'client_kwargs={"endpoint_url": "http://x:9000"}', "token=a=b", "e="]
    assert parse_storage_options(pairs) == {
        "anon": True,
        "n": 3,
        "key": "abc",
        "client_kwargs": {"endpoint_url": "http://x:9000"},
        "token": "a=b",
        "e": "",
    }


@pytest.mark.parametrize(
    "pairs, says", [(["anon"], "expected KEY=VALUE"), (["=1"], "expected KEY=VALUE"), (["a=1", "a=2"], "twice")]
)
def test_a_malformed_storage_option_is_a_one_line_error(capsys, memory_url, pairs, says):
    url = memory_url("d.zarr")
    write_zarr(url, *logistic_xy(m=50, n_x=2, dtype=np.float32), 25)
    argv = [arg for pair in pairs for arg in ("--storage-option", pair)]
    code, _, err = run(capsys, "evaluate", "model.npz", url, *argv)
    assert_one_line_error(code, err, "--storage-option", says)


def test_storage_options_reach_the_filesystems_zarr_reads_through(capsys, memory_url, monkeypatch):
    url = memory_url("d.zarr")
    write_zarr(url, *logistic_xy(m=50, n_x=2, dtype=np.float32), 25)
    with open_source(url, storage_options={"mark": 7}) as source:
        assert source.remote.storage_options == {"mark": 7} and source.remote.fs.storage_options["mark"] == 7
        store_fs = source.arrays()[0].store_path.store.fs
        assert getattr(store_fs, "sync_fs", store_fs).storage_options["mark"] == 7
    seen = []
    opening = Remote.open.__func__
    monkeypatch.setattr(Remote, "open", classmethod(lambda cls, u, o=None: seen.append(o) or opening(cls, u, o)))
    code, _, err = run(capsys, "inspect", url, "--storage-option", "anon=false", "--storage-option", "n=2")
    assert code == 0 and seen == [{"anon": False, "n": 2}], err
    with_weights(url, 50)  # opened again by name, with the store's options
    streamtrain.fit(open_source(url, storage_options={"mark": 7}), weights="W", epochs=1, batch_size=10)
    assert seen[1:] == [{"mark": 7}] * 2


def test_storage_options_for_a_local_path_are_an_error(capsys, tmp_path):
    path = write_zarr(tmp_path / "d.zarr", *logistic_xy(m=50, n_x=2, dtype=np.float32), 25)
    with pytest.raises(ConfigError, match="storage options are for URLs"):
        open_source(path, storage_options={"anon": True})
    code, _, err = run(capsys, "inspect", path, "--storage-option", "anon=true")
    assert_one_line_error(code, err, "d.zarr: storage options are for URLs")


# -- what a URL cannot be -----------------------------------------------------------------------


@pytest.fixture
def unknown_package(monkeypatch):
    """A protocol fsspec knows whose filesystem's package is not installed (as s3:// without s3fs)."""
    from fsspec.registry import known_implementations

    monkeypatch.setitem(
        known_implementations, "nopkg", {"class": "no_such_package.NoFS", "err": "Install no_such_package for nopkg"}
    )
    return "nopkg://bucket/d.zarr"


def test_urls_that_cannot_be_read_are_one_line_errors(capsys, memory_url, unknown_package, tmp_path):
    fsspec.filesystem("memory").pipe(memory_url("a.bin").removeprefix("memory://"), b"not a group")
    zarr.open_group(memory_url("empty.zarr"), mode="w").create_array("X", shape=(2, 3), dtype="f4")
    cases = {
        "bogus://b/d.zarr": "Protocol not known: bogus",
        unknown_package: "Install no_such_package for nopkg",
        memory_url("nope.zarr"): "no such store",
        memory_url("d.h5"): "only Zarr stores are read from URLs",
        memory_url("a.bin"): "is a file, not a Zarr group; only Zarr stores are read from URLs",
        memory_url("empty.zarr/X"): "not a Zarr group",
        memory_url("empty.zarr"): "no array 'Y' (found: X)",
    }
    for url, says in cases.items():
        code, _, err = run(capsys, "fit", url, "--out", tmp_path / "m.npz")
        assert_one_line_error(code, err, url, says)


def test_without_fsspec_a_url_names_the_extra_to_install(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "fsspec.core", None)
    with pytest.raises(ConfigError, match=r"memory://d\.zarr: reading a store from a URL needs fsspec: .*\[remote\]"):
        open_source("memory://d.zarr")


def test_outputs_at_urls_are_refused_before_any_work(capsys, tmp_path, memory_url):
    local = write_zarr(tmp_path / "d.zarr", *logistic_xy(m=50, n_x=2, dtype=np.float32), 25)
    streamtrain.fit(local, epochs=1, batch_size=10).save(tmp_path / "m.npz")
    out = memory_url("out")
    for argv in (
        ["fit", local, "--out", f"{out}.npz"],
        ["fit", local, "--metrics", f"{out}.jsonl", "--out", tmp_path / "n.npz"],
        ["predict", tmp_path / "m.npz", local, "--out", f"{out}.zarr"],
        ["convert", local, f"{out}.zarr"],
    ):
        code, _, err = run(capsys, *argv)
        assert_one_line_error(code, err, "is written to a local path, not a URL")
    assert not fsspec.filesystem("memory").exists(out.removeprefix("memory://").rpartition("/")[0])
    assert not (tmp_path / "n.npz").exists()


def test_a_model_of_a_store_at_a_url_goes_to_the_current_directory(capsys, memory_url, tmp_path, monkeypatch):
    write_zarr(memory_url("d.zarr"), *logistic_xy(m=50, n_x=2, dtype=np.float32), 25)
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "fit", memory_url("d.zarr/"), "--epochs", 1, "--batch-size", 10)
    assert code == 0 and "model written to d-model.npz" in out, err
    assert (tmp_path / "d-model.npz").is_file()


def test_a_file_url_to_the_output_is_still_the_data_being_read(capsys, tmp_path):
    path = write_zarr(tmp_path / "d.zarr", *logistic_xy(m=50, n_x=2, dtype=np.float32), 25)
    code, _, err = run(capsys, "convert", f"file://{path}", path, "--overwrite")
    assert_one_line_error(code, err, "is the data being read")
    assert open_source(path).m == 50


@pytest.mark.parametrize(
    "options", [{"batch_size": "full"}, {"shards": 2, "batch_size": 10}], ids=["exact passes", "shards"]
)
def test_dask_workers_in_other_processes_are_refused_a_memory_store(memory_url, options):
    url = memory_url("d.zarr")
    write_zarr(url, *logistic_xy(m=50, n_x=2, dtype=np.float32), 25)
    # They would find the store empty and read every chunk as the fill value.
    with pytest.raises(ConfigError, match=r"memory:// store lives in this process.*use threads or sync"):
        streamtrain.fit(url, scheduler="local", progress=False, **options)


def test_a_local_path_with_a_double_colon_is_a_path_not_a_url(tmp_path):
    path = tmp_path / "run::1.zarr"  # zarr alone would read the text as fsspec's chained URL form
    write_zarr(path, *logistic_xy(m=50, n_x=2, dtype=np.float32), 25)
    with open_source(str(path)) as source:
        assert (source.m, source.read_path, source.remote) == (50, "direct", None)
