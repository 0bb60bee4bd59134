"""Whole jobs, one module each: what each CLI command calls.

:mod:`.fit` (``fit_dataset``), :mod:`.evaluate` (``evaluate_dataset``), :mod:`.demo`
(``run_demo``), :mod:`.apply` (``apply_to_store``, ``rollback_store``,
``store_history``), :mod:`.bench` (``run_bench``), :mod:`.report` (``write_report``),
:mod:`.quickstart` (``run_quickstart``); :mod:`.provenance` holds what they all record.
"""
