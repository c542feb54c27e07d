"""Where an experiment's results live: every row, its files and URIs, compaction, and the
owner lock. Imports neither torch nor Ray."""
