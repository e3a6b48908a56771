"""The benchmark package behind `python -m toolkit.bench` (see toolkit/cli/bench.py).

timing: best-of-N wall-clock timing; peaks: the measured matrix-product limit; train: training
and forward throughput through the real trainer; sampling: tokens/s with and without caches;
reference: the paper's backbone side by side; parity: attention backends agree; suite: the plan
and the run; targets: the goals checked against a report; report: tables and the bench section of docs/performance.md.
"""
