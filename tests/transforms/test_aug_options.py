"""Option validation: unknown names and bad values are ConfigErrors naming the option."""

from __future__ import annotations

import pytest

from medcl.errors import ConfigError
from medcl.transforms import PRESETS, CTOptions, MROptions, build_preset, make_options


def test_unknown_override_names_the_option() -> None:
    with pytest.raises(ConfigError, match="rotaton_deg") as err:
        build_preset("mr", {"rotaton_deg": 5})
    assert "rotate_deg" in str(err.value)  # suggestion


def test_option_of_another_modality_is_rejected() -> None:
    with pytest.raises(ConfigError, match="p_motion"):
        build_preset("ct", {"p_motion": 0.1})
    with pytest.raises(ConfigError, match="window_level_hu"):
        build_preset("mr", {"window_level_hu": 40})


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("p_affine", 1.5),
        ("p_noise", -0.1),
        ("rotate_deg", -3),
        ("scale_range", (1.1, 0.9)),
        ("scale_range", (0.0, 1.0)),
        ("crop_area_range", (0.5, 1.2)),
        ("noise_std_range", [0.1]),
        ("flip_lr", "yes"),
        ("blur_sigma_px_range", ("a", 1.0)),
        ("window_width_hu", 0),
        ("bias_order", 2.5),
    ],
)
def test_bad_values_are_config_errors(key: str, value: object) -> None:
    name = "ct" if key.startswith("window") else "mr"
    with pytest.raises(ConfigError, match=key):
        build_preset(name, {key: value})


def test_lists_from_yaml_become_tuples_and_defaults_follow_the_guide() -> None:
    o = make_options("mr", {"scale_range": [0.95, 1.05], "rotate_deg": 5})
    assert o.scale_range == (0.95, 1.05) and o.rotate_deg == 5.0
    for name in PRESETS:
        d = make_options(name)
        assert d.flip_lr is False
        assert d.rotate_deg == 10.0 and d.scale_range == (0.9, 1.1)
        assert d.crop_area_range[0] >= 0.7
    ct = CTOptions()
    assert (ct.window_level_hu, ct.window_width_hu) == (40.0, 400.0)
    assert not hasattr(ct, "p_bias") and not hasattr(ct, "p_rician")  # HU are calibrated
    assert MROptions().p_motion > 0


def test_unknown_preset_and_dims() -> None:
    with pytest.raises(ConfigError, match="us"):
        build_preset("us")
    with pytest.raises(ConfigError, match="dims"):
        build_preset("ct", dims=4)
    with pytest.raises(ConfigError, match="MROptions"):
        build_preset("ct", MROptions())
    assert build_preset("CT").name == "ct"
