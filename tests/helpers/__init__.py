"""What several test files share, one copy each (imported as ``helpers.<module>``; the
top-level tests/conftest.py puts tests/ on the import path).

- :mod:`helpers.tiny`: the tiny end-to-end runs, their waits and checks (placement
  groups, the trial process to kill); imports Ray only inside the Ray checks.
- :mod:`helpers.datasets`: small datasets in the real on-disk formats (MVTec, CIFAR).
- :mod:`helpers.sweeps`: result rows, experiments and studies built by hand, and the
  report and TensorBoard checks (no torch, no Ray).
- :mod:`helpers.specs`: the demo specs and specs built in code (no torch, no Ray).
- :mod:`helpers.training`: a tiny in-memory task and comparisons of trained states (torch).
"""
