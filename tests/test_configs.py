"""The shipped DiNAT-L configs reproduce every value of the published configs."""
import pytest
from helpers.configs import REPO, load_config, published_values

PUBLISHED = published_values()


def _flatten(node, prefix=""):
    out = {}
    for key, value in node.items():
        if hasattr(value, "items"):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _plain(value):
    """Tuples and lists compare equal (YAML gives either)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def test_eight_published_configs_are_shipped():
    assert len(PUBLISHED) == 8
    missing = [path for path in PUBLISHED if not (REPO / path).is_file()]
    assert not missing, f"configs not shipped: {missing}"


@pytest.mark.parametrize("config_path", sorted(PUBLISHED))
def test_config_reproduces_every_published_value(config_path):
    ours = _flatten(load_config(config_path))
    wrong = {
        key: (ours.get(key, "<missing>"), value)
        for key, value in PUBLISHED[config_path].items()
        if _plain(ours.get(key, "<missing>")) != _plain(value)
    }
    assert not wrong, f"{config_path}: key: (ours, published): {wrong}"


@pytest.mark.parametrize("config_path", sorted(PUBLISHED))
def test_config_starts_from_the_dinat_large_pretraining(config_path):
    assert load_config(config_path).MODEL.WEIGHTS == "dinat_large_in22k_224.pkl"
