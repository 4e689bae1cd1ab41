"""edgekd: distil a PyTorch teacher into a benchmarked, budget-gated, mobile-ready student.

The repository's folders are installed under this one name (setuptools package-dir):
pipeline/ -> edgekd.pipeline, export/ -> edgekd.export, bench/ -> edgekd.bench, models/ -> edgekd.models.
This module stays free of imports: the agent's zipapp (agent.pyz) ships it to devices without
torch. The Python API (`edgekd.run`, `edgekd.load_run`, `edgekd.load_model`, `edgekd.gate`; see
edgekd/api.py) is loaded on first use.
"""
__version__ = "0.2.0"
__all__ = ["run", "load_run", "load_model", "gate", "Run", "GateResult", "__version__"]


def __getattr__(name: str):
    if name in __all__:
        from edgekd import api

        return getattr(api, name)
    raise AttributeError(f"module 'edgekd' has no attribute {name!r}")
