"""Shared test settings: the training seed comes from EDGEKD_TEST_SEED (default 0).

Run the suite for other seeds and other CPU kernel paths before trusting a learned-number assertion:

    EDGEKD_TEST_SEED=3 ATEN_CPU_CAPABILITY=default DNNL_MAX_CPU_ISA=SSE41 MKL_CBWR=COMPATIBLE make test
"""
import math
import os

SEED = int(os.environ.get("EDGEKD_TEST_SEED", "0"))


def binomial_floor(expected: float, n: int, sigmas: float = 4.0) -> float:
    """A floor for an accuracy measured on `n` samples whose typical value is `expected`: `sigmas`
    binomial standard errors below it, so sampling noise alone almost never crosses it."""
    return expected - sigmas * math.sqrt(expected * (1 - expected) / n)
