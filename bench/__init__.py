"""kubescribe benchmarks: each module is one command that prints a table and updates its own
section of docs/benchmarks.md.

A benchmark process pins numpy's BLAS to one thread, as `kubescribe serve` and `transcribe` do
(`kubescribe/cli.py`), so that in-process engines run the way the served runtime does; every
engine in a run, peers included, gets the same setting. It must happen before numpy is imported.
"""

from kubescribe.cli import pin_blas_threads

pin_blas_threads("serve")
