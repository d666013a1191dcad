"""Encoder families and model loading, building, initializing and saving."""
