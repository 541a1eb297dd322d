"""The course's benchmarks: `make bench` (or `python -m benchmarks [NAME ...]`) prints one table per module.

Each `bench_<topic>.py` has a `main()` that measures its targets and a reference in the same run and prints a
table with the ratio between them. Performance targets are met here, never in timed unit tests.
"""
