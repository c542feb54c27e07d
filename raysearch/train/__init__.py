"""Training one config: the per-worker loop over a spec's classes (worker) and the
epochs of one class (loop)."""
