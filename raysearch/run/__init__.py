"""Running experiments on Ray: the commands train, tune and ablate, the run skeleton
they share, the Optuna searcher, progress lines, Ray start-up and trackers."""
