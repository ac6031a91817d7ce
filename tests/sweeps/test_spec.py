"""Parsing and validating sweep specs: --grid items, YAML sections, bad input in one line."""

from __future__ import annotations

import pytest

from rldataflow.algorithms.ppo import Config as PPOConfig
from rldataflow.sweeps import Distribution, parse_grid_args, parse_sweep, split_sweep_file
from rldataflow.utils.config import ConfigError


def test_grid_args_are_yaml_lists_and_numbers_stay_numbers():
    grid = parse_grid_args(["lr=[1e-3,3e-4]", "hiddens=[[32],[64,64]]", "activation=[tanh]"])
    assert grid == {"lr": [0.001, 0.0003], "hiddens": [[32], [64, 64]],
                    "activation": ["tanh"]}
    spec = parse_sweep(["lr=[1e-3,3e-4]", "num_epochs=[5,10]"])
    points = spec.grid_points()
    assert len(points) == 4 and {"lr": 0.001, "num_epochs": 10} in points
    assert spec.num_trials() == 4


@pytest.mark.parametrize("item, needle", [
    ("lr=[1e-3,3e-4", "--grid lr: cannot parse"),          # malformed list
    ("lr=1e-3", "--grid lr: expects a non-empty list"),      # a value, not a list
    ("lr=[]", "--grid lr: expects a non-empty list"),
    ("[1,2]", "--grid expects KEY=[V1,V2,...]"),
])
def test_malformed_grid_items_are_one_line_naming_the_item(item, needle):
    with pytest.raises(ConfigError) as err:
        parse_grid_args([item])
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_unknown_and_invalid_keys_name_the_culprit():
    spec = parse_sweep(["lrr=[1e-3,3e-4]"])
    with pytest.raises(ConfigError, match=r"unknown config key 'lrr' in the sweep's grid .*"
                                          r"did you mean 'lr'"):
        spec.validate_against(PPOConfig, {})
    spec = parse_sweep(["num_epochs=[5,many]"])
    with pytest.raises(ConfigError, match=r"sweep value 'many' of 'num_epochs'"):
        spec.validate_against(PPOConfig, {})
    # a grid value that breaks a cross-field rule with the fixed config
    spec = parse_sweep(["minibatch_size=[64,4096]"])
    with pytest.raises(ConfigError, match="minibatch_size"):
        spec.validate_against(PPOConfig, {"train_batch_size": 1024})
    parse_sweep(["minibatch_size=[64,128]"]).validate_against(PPOConfig, {})


def test_yaml_file_sections(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text("""
algorithm: ppo
env: CartPole-v1
num_workers: 1
grid:
  num_epochs: [5, 10]
search:
  lr: {loguniform: [1e-5, 1e-3]}
  gamma: {uniform: [0.95, 0.999]}
  minibatch_size: {choice: [64, 128]}
  rollout_fragment_length: {randint: [32, 128]}
sweep:
  samples: 3
  mode: max
""")
    base, sections = split_sweep_file(path)
    assert base == {"algorithm": "ppo", "env": "CartPole-v1", "num_workers": 1}
    spec = parse_sweep((), sections)
    assert spec.search["lr"] == Distribution("loguniform", (1e-5, 1e-3))
    assert spec.search["rollout_fragment_length"] == Distribution("randint", (32, 128))
    assert spec.num_samples == 3 and spec.num_trials() == 6  # 2 grid points x 3 draws
    spec.validate_against(PPOConfig, {"num_workers": 1})
    # the command line wins over the file
    assert parse_sweep((), sections, samples=1).num_trials() == 2


@pytest.mark.parametrize("search, needle", [
    ("lr: {logunifrm: [1e-5, 1e-3]}", "unknown range kind 'logunifrm' (did you mean "
                                      "'loguniform'?)"),
    ("lr: {loguniform: [0, 1e-3]}", "loguniform needs low > 0"),
    ("lr: {uniform: [1e-3, 1e-5]}", "low < high"),
    ("lr: {uniform: 1e-3}", "uniform expects [low, high]"),
    ("lr: 1e-3", "search key 'lr': expects one of"),
    ("num_epochs: {randint: [1.5, 4]}", "randint expects integer ends"),
])
def test_bad_search_ranges_are_one_line(tmp_path, search, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(f"search:\n  {search}\n")
    _, sections = split_sweep_file(path)
    with pytest.raises(ConfigError) as err:
        parse_sweep((), sections)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_other_bad_sweeps():
    with pytest.raises(ConfigError, match="needs something to sweep"):
        parse_sweep(())
    with pytest.raises(ConfigError, match="unknown key 'sampels' in the 'sweep' section "
                                          r"\(did you mean 'samples'\?\)"):
        parse_sweep(["lr=[1,2]"], {"sweep": {"sampels": 2}})
    with pytest.raises(ConfigError, match="'lr' is both in the grid and in the search"):
        parse_sweep(["lr=[1,2]"], {"search": {"lr": {"uniform": [0.1, 1]}}})
    with pytest.raises(ConfigError, match="--samples must be an integer >= 1"):
        parse_sweep(["lr=[1,2]"], samples=0)
    with pytest.raises(ConfigError, match="'seed' is already a grid key"):
        parse_sweep(["seed=[1,2]"], samples=2).grid_points()


def test_samples_repeat_a_grid_with_seeds():
    spec = parse_sweep(["lr=[0.1,0.2]"], samples=2)
    assert spec.grid_points(base_seed=5) == [{"lr": 0.1, "seed": 5}, {"lr": 0.1, "seed": 6},
                                             {"lr": 0.2, "seed": 5}, {"lr": 0.2, "seed": 6}]
