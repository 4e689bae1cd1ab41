"""edgekd's orchestration layer: config, data, training stages, manifest and CLI."""
__version__ = "0.1.0"
