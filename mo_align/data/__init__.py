"""Datasets: the paper's MATH-500 split (``mo_align.data.math500``) and a synthetic arithmetic task."""
