"""Drop-ins for the frameworks retrieval code is written with (each imports its framework
only when used): :mod:`nudgekit.integrations.llama_index`."""
