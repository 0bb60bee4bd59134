"""Data formats: the embedded dataset layout, labels, Parquet shards, BEIR texts, splits.

Nothing here fits or searches: modules read and write the files nudgekit works on
(:mod:`.dataset`, :mod:`.labels`, :mod:`.parquet`, :mod:`.beir`, :mod:`.splits`), turn
texts into embeddings (:mod:`.embedding`), and write every output atomically
(:mod:`.atomic`).
"""
