"""edgekd: distil a PyTorch teacher into a benchmarked, budget-gated, mobile-ready student.

The repository's folders are installed under this one name (setuptools package-dir):
pipeline/ -> edgekd.pipeline, export/ -> edgekd.export, bench/ -> edgekd.bench, models/ -> edgekd.models.
This module stays free of imports: bench/agent.py runs on devices without torch.
"""
__version__ = "0.2.0"
