"""Which neighborhood-attention backends this environment has, as pytest parameters."""
import pytest

from mask2former_dinat.layers import na_natten

NATTEN_AVAILABLE, NATTEN_WHY = na_natten.availability()
needs_natten = pytest.mark.skipif(
    not NATTEN_AVAILABLE,
    reason=f"natten is optional and absent here ({NATTEN_WHY}); `NATTEN=1 make setup` installs it")


def backends(*names):
    """pytest parameters for these backend names; natten's skip where natten is absent."""
    return [pytest.param(name, marks=needs_natten) if name == "natten" else name for name in names]
