"""Benchmarks, one script each, run from the repository root as `python -m bench.<name>`;
`python -m bench` (or `make bench`) runs them all. Each prints JSON; bench/RESULTS.md records
the figures with the commands that produced them."""
