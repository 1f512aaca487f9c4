"""The garbage collector, set for a long-running service: a service that allocates
thousands of short-lived objects per batch had Python's default collector running a
full collection every few seconds over everything imported at start (about 100 ms each
on a busy machine), which costs CPU and lands on some request's latency every time."""

from __future__ import annotations

import gc

# Collections of the youngest generation once this many container objects outlive
# their allocation without being freed (default 700): most of a batch's objects die by
# reference counting, so this mostly saves work. The older generations as by default.
YOUNG_THRESHOLD = 10_000
OLDER_THRESHOLDS = (10, 10)


def tune_for_serving() -> None:
    """Called once the service is wired and about to serve: what exists now (modules,
    descriptors, settings, loaded models) lives as long as the process, so it is moved
    out of the collector's sight (``gc.freeze``) and never traversed again."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
