"""Imported first by the speed benchmarks, whose targets are for one core: the process is pinned to one CPU and
BLAS and OpenMP are kept single-threaded (which also avoids thread start-up on the small matrix products of one
env step). The variables only count before numpy loads, hence a module of its own, imported ahead of the rest."""

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
