"""Step `eval`: fidelity, dev scores, size and speed; the metrics."""
