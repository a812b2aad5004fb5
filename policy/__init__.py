"""π0: the model, its weights, training, inference with real-time chunking, and the policy server."""

import os

# OpenMP's default is to spin-wait between parallel regions. When another process holds a core,
# torch's threads then spin against it and a training step became 4–18× slower on this project's
# 2-core machine; passive threads sleep instead (`benchmarks/bench_threads.py` measures both).
# It must be set before torch loads its OpenMP runtime, so it is set here, where every module that
# imports torch for π0 starts; a value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
