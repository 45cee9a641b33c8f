"""Shared pytest configuration: float64 JAX for the oracle, strict numpy numerics."""
import numpy as np
import pytest

from tests import oracle  # noqa: F401  (sets XLA flags and the compile cache before JAX starts)

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)


@pytest.fixture(autouse=True)
def strict_numerics():
    """Every floating-point warning (overflow, invalid, divide, underflow) raises.

    ``np.errstate`` restores the previous state when the test ends, whatever happens.
    """
    with np.errstate(all="raise"):
        yield
