"""Datasets: bundled and user data, checked, split by seed and normalised with train statistics."""
from edgekd.pipeline.data.datasets import DATASETS, Dataset, prepare, write_eval

__all__ = ["DATASETS", "Dataset", "prepare", "write_eval"]
