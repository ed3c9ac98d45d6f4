"""Where ``predict``'s rows go, a chunk at a time: CSV (a file, or standard output), JSON
Lines or Parquet. Each chunk is complete on disk before the next is computed, so a run
stopped with Ctrl-C leaves a valid file of the files done; and the files an output
already holds, for ``--resume``.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

import pandas as pd

from ..prediction import csv_text, undefused

#: The output formats, by the suffix of ``--out``.
FORMATS: dict[str, str] = {
    ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"
}
PARQUET_HINT = (
    "Parquet output needs pyarrow: pip install 'ferdash[parquet]' (or write .csv or .jsonl)"
)


class OutputError(ValueError):
    """An output that cannot be written as asked; the message says why."""


def output_format(out: Path | None) -> str:
    """The format ``out`` asks for ("csv" on standard output when None); raises
    :class:`OutputError` for an unknown suffix, or Parquet without pyarrow."""
    if out is None:
        return "csv"
    fmt = FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise OutputError(f"--out must end in {', '.join(FORMATS)}: {out}")
    if fmt == "parquet":
        try:
            importlib.import_module("pyarrow.parquet")  # checked now, used once rows come
        except ImportError:
            raise OutputError(PARQUET_HINT) from None
    return fmt


@dataclass(frozen=True)
class Existing:
    """What an output written before holds: its files (as its "file" column has them)
    and the runs that answered."""

    files: frozenset[str] = frozenset()
    runs: frozenset[str] = frozenset()
    columns: tuple[str, ...] = ()


def read_existing(out: Path, fmt: str) -> Existing:
    """The files ``out`` already holds (nothing when it does not exist). A text output
    cut inside a row (a killed process) loses that row first, so it is done again."""
    if not out.exists() or out.stat().st_size == 0:
        return Existing()
    if fmt == "parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(out, columns=["file", "run"])
        files, runs = table.column("file").to_pylist(), table.column("run").to_pylist()
        columns = tuple(pq.read_schema(out).names)
    else:
        _drop_partial_line(out)
        if out.stat().st_size == 0:
            return Existing()
        if fmt == "csv":
            columns = tuple(pd.read_csv(out, nrows=0).columns)
            wanted = [c for c in ("file", "run") if c in columns]
            frame = pd.read_csv(out, usecols=wanted, dtype=str, keep_default_na=False)
            files = [n for name in frame.get("file", []) for n in {name, undefused(name)}]
            runs = list(frame.get("run", []))
        else:
            lines = out.read_text(encoding="utf-8").splitlines()
            rows = [json.loads(line) for line in lines if line]
            files = [row.get("file") for row in rows]
            runs = [row.get("run") for row in rows]
            columns = tuple(rows[0]) if rows else ()
    return Existing(
        files=frozenset(f for f in files if f is not None),
        runs=frozenset(r for r in runs if r),
        columns=columns,
    )


def _drop_partial_line(path: Path) -> None:
    with open(path, "rb+") as fh:
        end = fh.seek(0, os.SEEK_END)
        fh.seek(end - 1)
        if fh.read(1) == b"\n":
            return
        # Back to the end of the last whole line, reading backwards: outputs can be large.
        while end > 0:
            start = max(0, end - (1 << 20))
            fh.seek(start)
            at = fh.read(end - start).rfind(b"\n")
            if at >= 0:
                fh.truncate(start + at + 1)
                return
            end = start
        fh.truncate(0)


class Writer(Protocol):
    def write(self, frame: pd.DataFrame) -> None: ...

    def close(self) -> None: ...


@dataclass
class _TextWriter:
    stream: TextIO
    fmt: str
    header: bool  # CSV: whether the next chunk starts with the header line
    columns: tuple[str, ...] = ()  # CSV appended to: its header, which the rows must match
    owned: bool = True

    def write(self, frame: pd.DataFrame) -> None:
        if self.fmt == "csv":
            if self.columns and tuple(frame.columns) != self.columns:
                raise OutputError("the output's columns are not this run's: write to another --out")
            text = csv_text(frame, header=self.header)
            self.header = False
        else:
            # json.dumps, not DataFrame.to_json: that one writes every "/" of a path as "\/".
            plain = frame.astype(object).where(frame.notna(), None)
            text = "".join(
                json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n"
                for row in plain.to_dict(orient="records")
            )
        self.stream.write(text)
        self.stream.flush()

    def close(self) -> None:
        if self.owned:
            self.stream.close()


@dataclass
class _ParquetWriter:
    """One row group per chunk. Parquet files cannot be appended to: a resumed output is
    rewritten beside itself (its old rows first) and replaces it when closed."""

    out: Path
    float_columns: Sequence[str]
    keep: Any = None  # the old rows' table, when resuming
    _writer: Any = field(default=None, init=False)
    _schema: Any = field(default=None, init=False)

    @property
    def _target(self) -> Path:
        return self.out.with_name(self.out.name + ".partial") if self.keep is not None else self.out

    def write(self, frame: pd.DataFrame) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._schema is None:
            if self.keep is not None:
                schema = self.keep.schema
            else:
                schema = _schema(frame, self.float_columns)
            if tuple(schema.names) != tuple(frame.columns):
                raise OutputError("the output's columns are not this run's: write to another --out")
            self._schema = schema
        table = pa.Table.from_pandas(frame, schema=self._schema, preserve_index=False)
        if self._writer is None:
            # The first chunk's schema carries pandas' metadata, which reads the counts
            # and pixels back as Int64 (not floats) despite their blanks.
            schema = self.keep.schema if self.keep is not None else table.schema
            self._writer = pq.ParquetWriter(self._target, schema)
            if self.keep is not None:
                self._writer.write_table(self.keep)
        self._writer.write_table(table)

    def close(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        if self.keep is not None:
            os.replace(self._target, self.out)


def _schema(frame: pd.DataFrame, float_columns: Sequence[str]) -> Any:
    """Fixed from the columns, not the values: a chunk of unreadable files has no
    probabilities, and every row group must have the same types."""
    import pyarrow as pa

    types = []
    for name in frame.columns:
        if str(frame[name].dtype) == "Int64":
            types.append(pa.int64())
        elif name in float_columns:
            types.append(pa.float64())
        else:
            types.append(pa.string())
    return pa.schema(list(zip(frame.columns, types)))


def open_writer(
    out: Path | None, fmt: str, existing: Existing | None, float_columns: Sequence[str]
) -> Writer:
    """A writer of ``fmt`` to ``out`` (None: CSV on standard output); ``existing``: append
    to what is there (``--resume``), else start the file anew."""
    if out is None:
        return _TextWriter(sys.stdout, "csv", header=True, owned=False)
    appending = existing is not None and bool(existing.files)
    if fmt == "parquet":
        keep = None
        if appending:
            import pyarrow.parquet as pq

            keep = pq.read_table(out)
        return _ParquetWriter(out, float_columns, keep)
    stream = open(out, "a" if appending else "w", encoding="utf-8", newline="")
    columns = existing.columns if appending and existing is not None else ()
    return _TextWriter(stream, fmt, header=not appending, columns=columns if fmt == "csv" else ())
