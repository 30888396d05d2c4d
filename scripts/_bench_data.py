"""The stores, files and machine facts scripts/bench.py measures with (not part of the package).

Stores are made once by ``streamtrain make-data`` in a child process and reused; the floors
read their files directly: a zarr chunk file whole, an HDF5 chunk at the byte range h5py's
low-level ``get_chunk_info`` gives.
"""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from typing import NamedTuple

import streamtrain


class Store(NamedTuple):
    file: str  # name inside the data directory
    chunk: int | None  # samples per chunk; None: make-data's default (about 8 MiB of X)
    codec: str
    tenth: bool = False  # holds m // 10 samples (peak RSS at a tenth of m)


STORES = {
    "raw": Store("raw.zarr", 65_536, "none"),
    "zstd": Store("zstd.zarr", 65_536, "zstd"),
    "h5": Store("raw.h5", 65_536, "none"),
    "default": Store("default.zarr", None, "none"),
    "small": Store("small.zarr", None, "none", tenth=True),
}


def child_env() -> dict[str, str]:
    """The environment for child processes: they import the same streamtrain as this one."""
    root = os.path.dirname(os.path.dirname(streamtrain.__file__))
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}


# The child runs the CLI, then writes its own peak RSS (VmHWM, kB) to the file named first. Not
# wait4's ru_maxrss: Linux carries the parent's peak across fork (or vfork) and exec into it.
CHILD = """
import sys
from streamtrain.cli import main
code = main(sys.argv[2:])
with open("/proc/self/status") as f:
    peak_kb = next(line.split()[1] for line in f if line.startswith("VmHWM:"))
with open(sys.argv[1], "w") as f:
    f.write(peak_kb)
sys.exit(code)
"""


def run_child(argv: list[str], scratch: str) -> tuple[float, float]:
    """Run ``streamtrain ARGV`` in a child process; its wall seconds and its own peak RSS in MB."""
    peak_file = os.path.join(scratch, "peak-rss")
    t0 = time.perf_counter()
    code = subprocess.call([sys.executable, "-c", CHILD, peak_file, *argv], stdout=subprocess.DEVNULL, env=child_env())
    if code:
        raise SystemExit(f"bench: streamtrain {' '.join(argv)} failed with exit code {code}")
    wall = time.perf_counter() - t0
    with open(peak_file) as f:
        return wall, int(f.read()) / 1024


def ensure_store(data_dir: str, name: str, m: int, scratch: str) -> str:
    """The path of store ``name`` for ``m`` samples, made with make-data when missing."""
    store = STORES[name]
    path = os.path.join(data_dir, store.file)
    want = m // 10 if store.tenth else m
    if not os.path.exists(path):
        os.makedirs(data_dir, exist_ok=True)
        chunk = [] if store.chunk is None else ["--chunk", str(store.chunk)]
        print(f"bench: making {path} ({want:,} samples)", file=sys.stderr)
        run_child(["make-data", path, "--m", str(want), "--codec", store.codec, *chunk], scratch)
    source = streamtrain.open_source(path)
    if source.m != want or (store.chunk is not None and source.chunk_bounds[0][1] != min(store.chunk, want)):
        raise SystemExit(
            f"bench: {path} holds m={source.m:,} in chunks of {source.chunk_bounds[0][1]:,}, not m={want:,}"
            f"{'' if store.chunk is None else f' in chunks of {store.chunk:,}'}; use another --data-dir"
        )
    return path


Chunk = tuple[str, int, int]  # a chunk's bytes: file, offset, size


def chunk_bytes(path: str) -> list[Chunk]:
    """Where every chunk of the store's X and Y lies: zarr chunk files whole, in chunk order (X's
    then Y's); HDF5 chunks at the byte ranges h5py's low-level get_chunk_info gives, in file order."""
    return _hdf5_chunks(path) if path.endswith(".h5") else _zarr_chunks(path)


def _zarr_chunks(path: str) -> list[Chunk]:
    keyed = []
    for rank, array in enumerate(("X", "Y")):
        root = os.path.join(path, array, "c")  # zarr v3's default chunk key encoding, separator "/"
        for folder, _, files in os.walk(root):
            for f in files:
                file = os.path.join(folder, f)
                key = (*map(int, os.path.relpath(file, root).split(os.sep)), rank)
                keyed.append((key, (file, 0, os.path.getsize(file))))
    if not keyed:
        raise SystemExit(f"bench: {path} has no chunk files under X/c and Y/c (not a zarr v3 store?)")
    return [chunk for _, chunk in sorted(keyed)]


def _hdf5_chunks(path: str) -> list[Chunk]:
    import h5py

    with h5py.File(path, "r") as f:
        infos = [d.id.get_chunk_info(i) for d in (f["X"], f["Y"]) for i in range(d.id.get_num_chunks())]
    return [(path, info.byte_offset, info.size) for info in sorted(infos, key=lambda info: info.byte_offset)]


def read_chunks(chunks: list[Chunk], buf: bytearray) -> int:
    """preadv every chunk's bytes into one reused buffer, one open file at a time; the bytes read."""
    view, n, fd, current = memoryview(buf), 0, -1, None
    try:
        for file, offset, size in chunks:
            if file != current:
                if fd >= 0:
                    os.close(fd)
                fd, current = os.open(file, os.O_RDONLY), file
            n += os.preadv(fd, [view[:size]], offset)
    finally:
        if fd >= 0:
            os.close(fd)
    return n


def evict(store: str) -> None:
    """Drop every file of a store (a zarr directory or an HDF5 file) from the page cache. Pages not
    yet written back (a store just made) would stay: fdatasync first, free on clean files."""
    files = [store] if os.path.isfile(store) else [os.path.join(d, f) for d, _, fs in os.walk(store) for f in fs]
    for file in files:
        fd = os.open(file, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


PACKAGES = ("streamtrain", "numpy", "zarr", "numcodecs", "h5py", "dask", "distributed", "torch", "scikit-learn",
            "numba")  # fmt: skip


def machine() -> dict[str, object]:
    """What the numbers ran on: CPU, cores, RAM, and the versions that matter."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    versions = {}
    for package in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(ram, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        **versions,
    }


def describe(info: dict[str, object]) -> str:
    """The machine on one line."""
    rest = ", ".join(f"{k} {v}" for k, v in info.items() if k not in ("cpu", "cores", "ram_gib", "os"))
    return f"{info['cpu']}, {info['cores']} cores, {info['ram_gib']} GiB RAM; {info['os']}; {rest}"
