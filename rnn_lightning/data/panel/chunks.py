"""The chunks of a long CSV or Parquet file, as the streaming reader (:mod:`.stream`) takes them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

# One chunk of the input: its first row in the file, each row's id as a position in the chunk's distinct
# ids (-1 where missing), those ids as strings, and the chunk's other columns (time, target, covariates).
Chunk = tuple[int, np.ndarray, list[str], pd.DataFrame]


def csv_columns(path: Path, id_column: str) -> list[str]:
    """The header of a CSV as pandas reads it (the encoding and dtype arguments of read_long)."""
    return [str(c) for c in pd.read_csv(path, encoding="utf-8-sig", dtype={id_column: str}, nrows=0).columns]


def csv_chunks(path: Path, id_column: str, columns: list[str], rows: int) -> Iterator[Chunk]:
    """Each chunk of a CSV (:data:`Chunk`), read as read_long reads the whole file; ``columns[0]`` is the id."""
    reader = pd.read_csv(path, encoding="utf-8-sig", dtype={id_column: str}, usecols=columns, chunksize=rows)
    start = 0
    with reader:
        for chunk in reader:
            local, uniques = pd.factorize(chunk[columns[0]], use_na_sentinel=True)
            yield start, local, pd.Index(uniques).astype(str).tolist(), chunk[columns[1:]]
            start += len(chunk)


def csv_rows(path: Path) -> int:
    """An upper bound on a CSV's data rows without parsing it: its line breaks (pandas skips blank lines)."""
    count = 0
    with path.open("rb") as file:
        while block := file.read(1 << 24):
            count += block.count(b"\n")
    return count + 1


def parquet_rows(path: Path) -> int:
    """A Parquet file's row count, from its footer."""
    import pyarrow.parquet as pq

    return int(pq.read_metadata(path).num_rows)


def parquet_columns(path: Path) -> list[str]:
    """The data columns of a Parquet file: its schema less the index pandas stored with it."""
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)
    index = (schema.pandas_metadata or {}).get("index_columns", [])
    return [name for name in schema.names if name not in {c for c in index if isinstance(c, str)}]


def parquet_chunks(path: Path, columns: list[str], rows: int) -> Iterator[Chunk]:
    """Each record batch of a Parquet file (:data:`Chunk`), row group by row group; ``columns[0]`` is the id.

    Only the batch is converted to pandas. The id column is dictionary-encoded by Arrow, so the distinct
    ids of a batch become Python strings once each, not once per row.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    start = 0
    with pq.ParquetFile(path) as file:
        # One reader per row group: a single reader over the whole file keeps buffers of the groups
        # already read, about a third of the file's decoded size by its end.
        batches = (
            batch
            for group in range(file.num_row_groups)
            for batch in file.iter_batches(rows, row_groups=[group], columns=columns, use_pandas_metadata=False)
        )
        for batch in batches:
            ids = batch.column(0)
            if not pa.types.is_dictionary(ids.type):
                ids = ids.dictionary_encode()
            local = pc.fill_null(ids.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
            names = ids.dictionary.to_pandas().astype(str).tolist()
            others = pa.RecordBatch.from_arrays(batch.columns[1:], names=[f"c{j}" for j in range(1, len(columns))])
            yield start, local, names, others.to_pandas()
            start += batch.num_rows
