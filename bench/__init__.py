"""The on-device benchmark agent and target runners. Never imports torch or pipeline/ (a test proves it)."""
