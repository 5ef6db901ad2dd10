"""Speed benchmarks (random weights are fine for speed); each prints a table."""
