"""Data: MATLAB-exact degradation, image I/O, dataset discovery and the train/eval datasets."""

from edgesr.data.bicubic import degrade, imresize, modcrop
from edgesr.data.datasets import (
    EvalImages,
    TrainPatches,
    build_train_loader,
    dataset_name,
    eval_sets,
    load_lr,
    open_dataset,
)
from edgesr.data.images import ImageError, read_image, to_tensor, to_uint8, write_image
from edgesr.data.pairs import DatasetError, ImagePair, default_cache_dir, find_pairs
from edgesr.data.samples import BUILTIN_TRAIN, BUILTIN_VAL, builtin_pairs

__all__ = [
    "BUILTIN_TRAIN",
    "BUILTIN_VAL",
    "DatasetError",
    "EvalImages",
    "ImageError",
    "ImagePair",
    "TrainPatches",
    "build_train_loader",
    "dataset_name",
    "eval_sets",
    "builtin_pairs",
    "default_cache_dir",
    "degrade",
    "find_pairs",
    "imresize",
    "load_lr",
    "modcrop",
    "open_dataset",
    "read_image",
    "to_tensor",
    "to_uint8",
    "write_image",
]
