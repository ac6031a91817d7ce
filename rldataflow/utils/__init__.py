"""Utilities shared by every layer: typed configs, checkpoints, run logs and progress display.

Nothing here imports other rldataflow packages or ray, and importing it does not import torch
(``checkpoint`` and the TensorBoard writer import it when first used).

Example::

    from rldataflow.utils import AlgorithmConfig, build_config, parse_set_args

    cfg = build_config(AlgorithmConfig, parse_set_args(["num_workers=4"]), from_cli=True)
"""

from rldataflow.utils.checkpoint import (
    CheckpointError,
    checkpoint_path,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
)
from rldataflow.utils.config import (
    AlgorithmConfig,
    ConfigError,
    build_config,
    config_help,
    config_to_dict,
    load_yaml_config,
    merge_overrides,
    parse_set_args,
    qualified_name,
    to_jsonable,
)
from rldataflow.utils.logger import RunLogger, flatten_dict
from rldataflow.utils.progress import ProgressDisplay

__all__ = [
    "AlgorithmConfig",
    "CheckpointError",
    "ConfigError",
    "ProgressDisplay",
    "RunLogger",
    "build_config",
    "checkpoint_path",
    "config_help",
    "config_to_dict",
    "flatten_dict",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_yaml_config",
    "merge_overrides",
    "parse_set_args",
    "qualified_name",
    "read_metadata",
    "save_checkpoint",
    "to_jsonable",
]
