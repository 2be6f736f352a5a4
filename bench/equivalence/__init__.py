"""Helpers of bench/equivalence_official.py (official PyTorch half, weight mapping, Keras half)."""
