"""The Parquet corpus layout: an embedded dataset whose corpus is a folder of shards.

A Parquet dataset directory is the embedded layout of :mod:`nudgekit.dataset` with
``corpus.npy`` + ``corpus_ids.json`` replaced by a ``corpus/`` folder::

    corpus/part-00000.parquet ...   the corpus, one shard per file (see below)
    queries.npy, query_ids.json, qrels.json, splits.json, embed_meta.json   (unchanged)

Shard schema (every file the same):

============  ==========================================  ===============================
column        Arrow type                                  meaning
============  ==========================================  ===============================
``id``        ``string`` (``large_string`` and integer    the record id used in qrels.json
              types are accepted, read as strings)
``vector``    ``fixed_size_list<float32>[d]``             the embedding (float16/float64
              (``list<float>`` is accepted when every     items accepted); normalised by
              row has d values)                           nudgekit, like corpus.npy
============  ==========================================  ===============================

Other columns are ignored. Shards are read in file-name order (zero-pad the numbers), so
corpus row ``i`` — the row numbers in ``fit.json`` and in error messages — is shard order,
then row order inside a shard. Ids must be unique across all shards.

Nothing here holds the corpus in memory: shards are read row group by row group, in
blocks of ``block_rows`` rows (:func:`read_fragment`), which is also how the Ray engine's
read tasks read them.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nudgekit.core import Block, CorpusError, FitProblem
from nudgekit.io.atomic import atomic_file
from nudgekit.io.dataset import EmbeddedDataset, Split, load_matrix

ID_COLUMN = "id"
VECTOR_COLUMN = "vector"
CORPUS_DIR = "corpus"
#: The files of the embedded layout that ``convert`` copies unchanged.
COPIED_FILES = ("queries.npy", "query_ids.json", "qrels.json", "splits.json", "embed_meta.json")

Progress = Callable[[str, int, int], None]


def locate(shard_names: list[str], offsets: np.ndarray, row: int) -> str:
    """``corpus/part-00003.parquet row 17 (corpus row 123)``: where a corpus row is stored."""
    shard = int(np.searchsorted(offsets, row, side="right")) - 1
    return f"{shard_names[shard]} row {row - int(offsets[shard])} (corpus row {row})"


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.compute
        import pyarrow.parquet  # submodules: ``import pyarrow`` does not load them
    except ImportError:
        raise ImportError("a Parquet corpus needs pyarrow: pip install 'nudgekit[scale]'") from None
    return pyarrow


# -- the corpus ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Fragment:
    """Consecutive row groups of one shard: the unit a read task (or the local loop) reads."""

    shard: int
    path: str
    row_groups: tuple[int, ...]
    start: int  # corpus row of its first row
    n_rows: int


@dataclass
class ParquetCorpus:
    """A folder of Parquet shards, described from the file footers only (no data is read).

    Attributes
    ----------
    root : Path
        The ``corpus/`` folder.
    paths : list of str
        The shards, in corpus order.
    shard_rows : int64 array
        Rows per shard.
    offsets : int64 array
        Corpus row of each shard's first row (``len(paths) + 1`` entries).
    dim : int
    item_type : str
        Arrow type of the vector items (``float``, ``halffloat``, ``double``).
    """

    root: Path
    paths: list[str]
    shard_rows: np.ndarray
    offsets: np.ndarray
    dim: int
    item_type: str
    row_group_rows: list[list[int]] = field(repr=False)

    @property
    def n_records(self) -> int:
        return int(self.offsets[-1])

    @property
    def shape(self) -> tuple[int, int]:
        return self.n_records, self.dim

    def shard_names(self) -> list[str]:
        """Shard paths relative to the dataset (``corpus/part-00000.parquet``), for messages."""
        return [f"{CORPUS_DIR}/{Path(p).name}" for p in self.paths]

    def where(self, row: int) -> str:
        """The shard and shard row of corpus row ``row``, for messages."""
        return locate(self.shard_names(), self.offsets, row)

    def fragments(self, target_rows: int = 1 << 17) -> list[Fragment]:
        """Split the shards into fragments of whole row groups, about ``target_rows`` each.

        Fragments never cross a shard; a row group larger than ``target_rows`` is one
        fragment on its own (a reader holds one row group's pages at a time).
        """
        out: list[Fragment] = []
        for s, (path, groups) in enumerate(zip(self.paths, self.row_group_rows, strict=True)):
            start, chosen, rows = int(self.offsets[s]), [], 0
            for g, n in enumerate(groups):  # row groups of one file: a handful, not rows
                if chosen and rows + n > target_rows:
                    out.append(Fragment(s, path, tuple(chosen), start, rows))
                    start, chosen, rows = start + rows, [], 0
                chosen.append(g)
                rows += n
            if rows:
                out.append(Fragment(s, path, tuple(chosen), start, rows))
        return out

    def blocks(self, block_rows: int = 8192) -> Iterator[Block]:
        """The whole corpus in order, ``block_rows`` rows at a time (never across shards);
        each block carries its ids (as :func:`id_bytes`)."""
        for fragment in self.fragments():
            yield from read_fragment(fragment, block_rows, self.dim, self.where)

    def describe(self, block: Block, i: int, problem: str) -> str:
        return f"{self.where(block.row(i))}: the vector {problem}"

    def check_unique_ids(self) -> None:
        """Raise :class:`CorpusError` naming an id that occurs more than once across the
        shards. Reads the id column only (a few % of the bytes of the vectors)."""
        pc = _pyarrow().compute
        ids = self.read_ids()
        if len(pc.unique(ids)) == len(ids):
            return
        counts = pc.value_counts(ids)
        dup = counts.filter(pc.greater(counts.field("counts"), 1))[0]["values"].as_py()
        rows = np.flatnonzero(pc.equal(ids, dup).to_numpy(zero_copy_only=False))[:2]
        raise CorpusError(
            f"duplicate id {dup!r}: {self.where(int(rows[0]))} and {self.where(int(rows[1]))}"
        )

    def read_ids(self) -> Any:
        """Every id as one Arrow ``ChunkedArray`` (the id column only; for the uniqueness check)."""
        pa = _pyarrow()
        chunks = [
            _string_ids(batch.column(0))
            for fragment in self.fragments()
            for batch in read_batches(fragment, 1 << 16, [ID_COLUMN])
        ]
        return pa.chunked_array(chunks, type=pa.large_string())


def open_corpus(root: str | os.PathLike[str], dim: int | None = None) -> ParquetCorpus:
    """Describe the shards under ``root`` from their footers and check their schemas.

    Parameters
    ----------
    root : path
        The ``corpus/`` folder.
    dim : int, optional
        The expected vector length (the queries' dimension); required when the vector
        column is a variable-length ``list``.

    Raises
    ------
    FileNotFoundError
        No folder, or no ``*.parquet`` file in it.
    ValueError
        A shard without the ``id``/``vector`` columns, with another vector length or item
        type than the others, or an empty corpus.
    """
    pa = _pyarrow()
    folder = Path(root)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} does not exist")
    paths = sorted(str(p) for p in folder.glob("*.parquet") if p.is_file())
    if not paths:
        raise FileNotFoundError(f"{folder}: no *.parquet shard")
    found_dim, item_type = dim, None
    shard_rows, groups = [], []
    for path in paths:
        name = f"{CORPUS_DIR}/{Path(path).name}"
        try:
            meta = pa.parquet.ParquetFile(path)
        except (OSError, pa.ArrowInvalid) as err:
            raise ValueError(f"{name}: not a readable Parquet file ({err})") from None
        schema = meta.schema_arrow
        for column in (ID_COLUMN, VECTOR_COLUMN):
            if schema.get_field_index(column) < 0:
                raise ValueError(
                    f"{name}: no {column!r} column (has: {', '.join(schema.names)}); a corpus "
                    "shard needs id (string) and vector (fixed_size_list<float32>[d])"
                )
        id_type = schema.field(ID_COLUMN).type
        if not (pa.types.is_string(id_type) or pa.types.is_large_string(id_type)) and not (
            pa.types.is_integer(id_type)
        ):
            raise ValueError(f"{name}: column 'id' has type {id_type}, expected string")
        vtype = schema.field(VECTOR_COLUMN).type
        if pa.types.is_fixed_size_list(vtype):
            size = vtype.list_size
            if found_dim is not None and size != found_dim:
                raise ValueError(
                    f"{name}: vectors have {size} values but {found_dim} are expected "
                    "(the queries' dimension, or the other shards')"
                )
            found_dim = size
        elif not (pa.types.is_list(vtype) or pa.types.is_large_list(vtype)):
            raise ValueError(
                f"{name}: column 'vector' has type {vtype}, expected fixed_size_list<float32>[d]"
            )
        value_type = vtype.value_type
        if not pa.types.is_floating(value_type):
            raise ValueError(f"{name}: vector items have type {value_type}, expected float")
        if item_type is not None and str(value_type) != item_type:
            raise ValueError(
                f"{name}: vector items are {value_type} but earlier shards' are {item_type}"
            )
        item_type = str(value_type)
        md = meta.metadata
        groups.append([md.row_group(g).num_rows for g in range(md.num_row_groups)])
        shard_rows.append(md.num_rows)
    if found_dim is None:
        raise ValueError(
            f"{folder}: vector columns are variable-length lists; the dimension must be known"
        )
    rows = np.asarray(shard_rows, dtype=np.int64)
    if rows.sum() == 0:
        raise ValueError(f"{folder}: the shards hold no rows")
    offsets = np.concatenate([[0], np.cumsum(rows)]).astype(np.int64)
    return ParquetCorpus(folder, paths, rows, offsets, int(found_dim), str(item_type), groups)


def read_batches(fragment: Fragment, block_rows: int, columns: list[str]) -> Iterator[Any]:
    """One fragment's ``columns`` as Arrow record batches of at most ``block_rows`` rows.

    Memory: about one row group's pages plus one batch.
    """
    pa = _pyarrow()
    # a buffered stream without pre-buffering: otherwise pyarrow reads ahead across the
    # fragment's row groups (measured: 229 MB of buffers for a 125k-row, 384-d fragment,
    # 48 MB like this)
    reader = pa.parquet.ParquetFile(fragment.path, buffer_size=1 << 20, pre_buffer=False)
    return reader.iter_batches(
        batch_size=block_rows,
        row_groups=list(fragment.row_groups),
        columns=columns,
        use_threads=False,  # one core per task: the engines parallelise across fragments
    )


def read_fragment(
    fragment: Fragment, block_rows: int, dim: int, where: Callable[[int], str]
) -> Iterator[Block]:
    """Read one fragment in checked blocks of at most ``block_rows`` rows.

    ``where(row)`` names a corpus row in messages (:meth:`ParquetCorpus.where`). NaN/zero
    vectors are found later, by the corpus pass, which normalises the rows anyway.
    """
    start = fragment.start
    for batch in read_batches(fragment, block_rows, [ID_COLUMN, VECTOR_COLUMN]):
        ids, vectors = block_arrays(batch.column(0), batch.column(1), dim, start, where)
        yield Block(start, vectors, id_bytes(ids))
        start += len(vectors)


def block_arrays(
    ids: Any, vectors: Any, dim: int, start: int, where: Callable[[int], str]
) -> tuple[Any, np.ndarray]:
    """Check one block's raw ``id`` and ``vector`` columns; return ids and an ``[n, d]`` view.

    Raises :class:`CorpusError` for a null id or vector, a null vector item, or a vector
    whose length is not ``dim``; ``start`` is the block's first corpus row.
    """
    pa = _pyarrow()
    ids = _string_ids(ids)
    for column, what in ((ids, "no id"), (vectors, "no vector")):
        if column.null_count:
            bad = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
            raise CorpusError(f"{where(start + bad)}: {what} (null)")
    if not pa.types.is_fixed_size_list(vectors.type):
        lengths = pa.compute.list_value_length(vectors).to_numpy(zero_copy_only=False)
        bad = np.flatnonzero(lengths != dim)
        if len(bad):
            i = int(bad[0])
            raise CorpusError(
                f"{where(start + i)}: the vector has {int(lengths[i])} values, expected {dim}"
            )
    elif vectors.type.list_size != dim:
        raise CorpusError(
            f"{where(start)}: vectors have {vectors.type.list_size} values, expected {dim}"
        )
    values = vectors.flatten()  # honours the slice offset of the batch
    if values.null_count:
        bad = int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])
        raise CorpusError(f"{where(start + bad // dim)}: a vector item is null")
    return ids, values.to_numpy(zero_copy_only=False).reshape(len(vectors), dim)


def _string_ids(column: Any) -> Any:
    pa = _pyarrow()
    if pa.types.is_large_string(column.type):
        return column
    return column.cast(pa.large_string())


def id_bytes(ids: Any) -> np.ndarray:
    """Arrow string (or binary) ids as a fixed-width numpy bytes array, with no Python loop.

    Bytes arrays sort and ``searchsorted`` in C, which is how the corpus pass tests
    membership in the tracked set. (NumPy drops trailing NUL bytes: ids must not end
    in ``\\x00``.)
    """
    pa = _pyarrow()
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks()
    # string and binary share one layout: the cast to large_binary only widens offsets
    ids = ids.cast(pa.large_binary())
    n = len(ids)
    offsets = np.frombuffer(ids.buffers()[1], dtype=np.int64)[ids.offset : ids.offset + n + 1]
    data = ids.buffers()[2]
    data = np.frombuffer(data, dtype=np.uint8) if data is not None else np.empty(0, np.uint8)
    lengths = np.diff(offsets)
    width = max(int(lengths.max()) if n else 1, 1)
    cols = np.arange(width)
    inside = cols[None, :] < lengths[:, None]
    matrix = np.zeros((n, width), dtype=np.uint8)
    matrix[inside] = data[(offsets[:-1, None] + cols[None, :])[inside]]
    return matrix.view(f"S{width}").reshape(n)


def id_hashes(keys: np.ndarray) -> np.ndarray:
    """64-bit FNV-1a hashes of bytes ids (from :func:`id_bytes`), vectorised over rows.

    The loop runs over character positions (the id width), never over rows.
    """
    width = keys.dtype.itemsize
    h = np.full(len(keys), 0xCBF29CE484222325, dtype=np.uint64)
    if len(keys) == 0:
        return h
    matrix = np.ascontiguousarray(keys).view(np.uint8).reshape(len(keys), width)
    lengths = np.char.str_len(keys)  # the padding must not count: widths differ by block
    prime = np.uint64(0x100000001B3)
    for c in range(width):
        inside = c < lengths
        # wraps modulo 2^64, as FNV wants
        h = np.where(inside, (h ^ matrix[:, c].astype(np.uint64)) * prime, h)
    return h


# -- the dataset -------------------------------------------------------------------------------
def is_parquet_dataset(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a dataset directory whose corpus is a ``corpus/`` folder of shards."""
    root = Path(path)
    if not (root / CORPUS_DIR).is_dir():
        return False
    if (root / "corpus.npy").exists():
        raise ValueError(
            f"{root}: has both corpus.npy and {CORPUS_DIR}/; keep one corpus (remove the other)"
        )
    return True


@dataclass
class ParquetDataset:
    """A Parquet dataset directory: the shards (described, not read) and the small files."""

    path: Path
    corpus: ParquetCorpus
    queries: np.ndarray
    query_ids: list[str]
    qrels: dict[str, dict[str, int]]
    splits: dict[str, list[str]]
    meta: dict[str, Any]

    @property
    def n_records(self) -> int:
        return self.corpus.n_records

    @property
    def dim(self) -> int:
        return self.corpus.dim

    def fit_problem(self, uses_val: bool = True) -> FitProblem:
        """The train (and val) split as a NUDGE fit's labels, over the labelled ids: the
        corpus pass finds their rows (:meth:`nudgekit.core.FitProblem.over_rows`)."""
        labels, splits = self.labelled_splits(("train", "val") if uses_val else ("train",))
        val = splits["val"].check_labelled().labelled() if uses_val else None
        return FitProblem(
            self.n_records, self.dim, splits["train"].labelled(), val, label_ids=labels
        )

    def labelled_splits(self, names: tuple[str, ...]) -> tuple[np.ndarray, dict[str, Split]]:
        """The ids that the splits' qrels point to, and each split labelled over them.

        Returns ``(labels, splits)``: ``labels`` holds the distinct relevant doc ids of the
        queries in ``names`` (sorted, as numpy bytes — see :func:`id_bytes`), and each
        :class:`Split`'s relevance indexes ``labels`` instead of corpus rows. The corpus
        pass then finds these ids' rows; no full id → row map is ever built.
        """
        wanted = {q for name in names for q in self.splits.get(name, ())}
        # sorted str order is UTF-8 byte order, the order of the bytes array
        docs = sorted({d for q in wanted for d in self.qrels.get(q, {})})
        labels = (
            np.char.encode(np.asarray(docs, dtype=str), "utf-8")
            if docs
            else np.empty(0, dtype="S1")
        )
        # the labelled records stand in for the corpus: split() needs their ids (in the
        # order of ``labels``) and the dimension only
        stand_in = EmbeddedDataset(
            self.path,
            np.broadcast_to(np.float32(0), (len(docs), self.dim)),
            docs,
            self.queries,
            self.query_ids,
            self.qrels,
            self.splits,
            self.meta,
        )
        return labels, {name: stand_in.split(name) for name in names}


def load_parquet_dataset(path: str | os.PathLike[str]) -> ParquetDataset:
    """Open a Parquet dataset directory; the shards' footers are read, their data is not.

    Raises ``FileNotFoundError`` for missing files and ``ValueError`` for anything
    malformed (as :func:`nudgekit.dataset.load_dataset`, plus the shard checks of
    :func:`open_corpus`).
    """
    from nudgekit.io.dataset import read_id_list, read_json, read_qrels, read_splits

    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset directory {root} does not exist")
    missing = [f for f in COPIED_FILES[:-1] if not (root / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{root}: missing {', '.join(missing)}")
    queries = load_matrix(root / "queries.npy")
    try:
        corpus = open_corpus(root / CORPUS_DIR, dim=queries.shape[1])
    except ValueError as err:
        if "expected" in str(err) and "queries" in str(err):
            raise ValueError(
                f"{root}: dimension mismatch, queries.npy has {queries.shape[1]} values per "
                f"row but {err}"
            ) from None
        raise
    query_ids = read_id_list(root / "query_ids.json", queries.shape[0], "queries.npy")
    qrels = read_qrels(root / "qrels.json")
    splits = read_splits(root / "splits.json")
    meta_path = root / "embed_meta.json"
    meta = read_json(meta_path) if meta_path.is_file() else {}
    return ParquetDataset(root, corpus, queries, query_ids, qrels, splits, meta)


# -- writing -----------------------------------------------------------------------------------
def vector_array(vectors: np.ndarray) -> Any:
    """An ``[n, d]`` float32 matrix as an Arrow ``fixed_size_list<float32>[d]`` array (no copy)."""
    pa = _pyarrow()
    flat = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat, type=pa.float32()), vectors.shape[1])


def write_changed_rows(
    path: str | os.PathLike[str],
    ids: Any,
    new: np.ndarray,
    original: np.ndarray,
) -> None:
    """Write the changed records as Parquet (``id``, ``vector`` new, ``original``), atomically.

    ``original`` is the L2-normalised input embedding (what nudgekit fitted on).
    """
    pa = _pyarrow()
    target = Path(path)
    table = pa.table(
        {
            ID_COLUMN: pa.array(list(ids), type=pa.string()),
            VECTOR_COLUMN: vector_array(new),
            "original": vector_array(original),
        }
    )
    with atomic_file(target) as f:
        pa.parquet.write_table(table, f, compression="zstd", use_dictionary=False)


def read_changed_rows(path: str | os.PathLike[str], dim: int) -> tuple[np.ndarray, np.ndarray]:
    """The new vectors of a ``changed.parquet`` (:func:`write_changed_rows`), sorted by id.

    Returns ``(ids, vectors)``: ids as numpy bytes (:func:`id_bytes`), ascending, and their
    float32 ``[n, dim]`` vectors. Raises ``ValueError`` for a file that is not such a table
    (missing columns, null or duplicate ids, vectors of another length).
    """
    pa = _pyarrow()
    target = Path(path)
    if not target.is_file():
        raise FileNotFoundError(f"{target} does not exist")
    try:
        table = pa.parquet.read_table(target, columns=[ID_COLUMN, VECTOR_COLUMN])
    except (pa.ArrowInvalid, KeyError) as err:
        raise ValueError(f"{target}: not a changed-rows table with id and vector ({err})") from None
    where = f"{target}: row {{}}".format
    ids, vectors = block_arrays(
        table.column(0).combine_chunks(), table.column(1).combine_chunks(), dim, 0, where
    )
    keys = id_bytes(ids)
    order = np.argsort(keys, kind="stable")
    keys, vectors = keys[order], np.asarray(vectors, dtype=np.float32)[order]
    duplicate = np.flatnonzero(keys[1:] == keys[:-1])
    if len(duplicate):
        raise ValueError(f"{target}: id {keys[duplicate[0]].decode('utf-8')!r} appears twice")
    return keys, vectors


def write_shard(path: Path, blocks: Iterator[tuple[list[str], np.ndarray]], dim: int) -> int:
    """Stream ``(ids, vectors)`` blocks into one shard, one row group per block; rows written."""
    pa = _pyarrow()
    schema = pa.schema([(ID_COLUMN, pa.string()), (VECTOR_COLUMN, pa.list_(pa.float32(), dim))])
    rows = 0
    # vectors do not compress and are never equal: no dictionary, no compression, no
    # statistics for them (all three cost CPU for nothing); ids get zstd
    with pa.parquet.ParquetWriter(
        path,
        schema,
        compression={ID_COLUMN: "zstd", VECTOR_COLUMN: "none"},
        use_dictionary=False,
        write_statistics=[ID_COLUMN],
    ) as writer:
        for ids, vectors in blocks:
            table = pa.table(
                {ID_COLUMN: pa.array(ids, type=pa.string()), VECTOR_COLUMN: vector_array(vectors)},
                schema=schema,
            )
            writer.write_table(table, row_group_size=len(vectors))
            rows += len(vectors)
    return rows


def convert_to_parquet(
    dataset_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    shards: int,
    row_group_rows: int = 16_384,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Write an embedded dataset (``corpus.npy`` layout) as a Parquet dataset directory.

    The corpus is streamed from its memory map into ``shards`` files of (nearly) equal
    size under ``out_dir/corpus/``, row groups of ``row_group_rows`` rows, float32
    vectors; ``queries.npy``, ``query_ids.json``, ``qrels.json``, ``splits.json`` (and
    ``embed_meta.json``) are copied. Rows keep their order, so corpus row numbers agree.
    The corpus folder is written beside its final name and renamed when complete.

    Returns a summary (rows, shards, bytes, seconds).
    """
    from nudgekit.io.dataset import load_dataset

    started = time.perf_counter()
    if shards < 1:
        raise ValueError(f"--shards must be >= 1, got {shards}")
    if row_group_rows < 1:
        raise ValueError(f"row_group_rows must be >= 1, got {row_group_rows}")
    out = Path(out_dir)
    if (out / CORPUS_DIR).exists() or (out / "corpus.npy").exists():
        raise ValueError(f"--out {out} already holds a corpus; choose a new directory")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory")
    data = load_dataset(dataset_dir)  # validates the source layout (ids, shapes, splits)
    n, d = data.n_records, data.dim
    shards = min(shards, n)
    out.mkdir(parents=True, exist_ok=True)
    partial = out / f".{CORPUS_DIR}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    bounds = np.linspace(0, n, shards + 1).round().astype(np.int64)
    width = max(5, len(str(shards - 1)))
    done = 0
    try:
        for s in range(shards):  # one file each: shards, not rows
            lo, hi = int(bounds[s]), int(bounds[s + 1])

            def blocks(lo: int = lo, hi: int = hi) -> Iterator[tuple[list[str], np.ndarray]]:
                nonlocal done
                for a in range(lo, hi, row_group_rows):
                    b = min(a + row_group_rows, hi)
                    yield data.corpus_ids[a:b], np.asarray(data.corpus[a:b], dtype=np.float32)
                    done += b - a
                    if progress is not None:
                        progress("convert corpus", done, n)

            write_shard(partial / f"part-{s:0{width}d}.parquet", blocks(), d)
        for name in COPIED_FILES:
            if (Path(dataset_dir) / name).is_file():
                shutil.copyfile(Path(dataset_dir) / name, out / name)
        os.replace(partial, out / CORPUS_DIR)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return {
        "dataset": str(Path(dataset_dir).resolve()),
        "out": str(out.resolve()),
        "n_records": n,
        "dim": d,
        "shards": shards,
        "row_group_rows": row_group_rows,
        "corpus_bytes": sum(p.stat().st_size for p in (out / CORPUS_DIR).glob("*.parquet")),
        "seconds": time.perf_counter() - started,
    }
