"""edgekd's orchestration layer: config, data, training stages, manifest and CLI."""
