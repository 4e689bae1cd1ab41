"""The on-device benchmark agent: standard library, numpy and one runtime; never torch, never pipeline/.

Run it as `python -m edgekd.bench.agent` from an installed edgekd, or as one file, `python3 agent.pyz`
(built by `pyz.build`; `edgekd pack` puts it in every bundle, the remote targets copy it). The host
imports the same modules: cli (arguments), bundle (bundles), jobs (the scheduler and result rows),
processes (starting workers), worker (one model in one process), runtimes (one module per runtime),
evalset, device (memory, board state), stats (latency statistics), limits (size ceiling, deadline).
This module imports nothing, so that a worker loads only what it uses.
"""
