"""A source seen through another: some of its chunks (``holdout.ChunkSubset``), its X scaled
(``standardize.StandardizedSource``). A view's data is the source's: so are its stamp,
fingerprint and bytes stored, and closing a view leaves the source open (its owner closes it)."""

from __future__ import annotations

from typing import Any

from ._base import ChunkSource

__all__ = ["SourceView"]


class SourceView(ChunkSource):
    """``source`` itself, for subclasses to change: its shapes, names, chunks, attributes and warnings."""

    def __init__(self, source: ChunkSource) -> None:
        self.__dict__.update(source.__dict__)
        # Messages name the store's chunks (chunk 12 of the store, not the 8th a holdout trains on).
        self.__dict__["chunk_starts"] = source.chunk_starts
        self.format, self.codec = source.format, source.codec
        self.source = source

    def _read(self, start: int, stop: int, into: Any = None) -> Any:
        return self.source._read(start, stop, into)

    def will_read(self, c: int) -> None:
        self.source.will_read(c)

    def stamp(self) -> str:
        return self.source.stamp()

    def fingerprint(self) -> dict[str, Any]:
        return self.source.fingerprint()

    def stored_bytes(self) -> tuple[int, int]:
        return self.source.stored_bytes()

    def close(self) -> None:
        pass
