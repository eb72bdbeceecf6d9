"""Benchmarks and the independent judge (bench/judge.py); scripts, not part of the installed package."""
