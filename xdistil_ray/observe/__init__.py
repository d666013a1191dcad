"""What a person watching a run sees: the console, progress lines, Ray metrics, TensorBoard."""
