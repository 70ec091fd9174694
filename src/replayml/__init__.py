"""replayml: reproducible, reviewable ML experiments."""

import os as _os

#: how long an idle OpenMP thread of LightGBM (GNU libgomp) spins before it sleeps
OPENMP_SPINCOUNT = "10000"

# libgomp's default is to spin ~300k rounds at every barrier: on a machine whose cores are
# busy with other work (CI, a laptop, parallel jobs) spinning threads keep the working ones
# off the cores and training gets many times slower. A short spin is as fast on an idle
# machine and bounds that. Set before any library loads libgomp; a user's own setting wins.
if "OMP_WAIT_POLICY" not in _os.environ:
    _os.environ.setdefault("GOMP_SPINCOUNT", OPENMP_SPINCOUNT)
