"""Benchmarks (`make bench`): real processes on loopback, results in bench/results/."""
