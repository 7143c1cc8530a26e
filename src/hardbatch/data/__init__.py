"""Data sets by name (a table that new data sets join), and the loaders and batch transforms the loop reads.

The package, bottom to top: ``memory`` (data sets held as tensors, and views of any data set), ``transforms``
(batch transforms), ``splits`` (the validation split and the reshaped training split), ``loaders`` (``DataSplits``
and its DataLoaders), ``readers`` (one module per family of data sets), ``registry`` (the table, ``load_dataset``).
Each imports only those before it; this face re-exports what the rest of hardbatch uses.
"""

from hardbatch.data.loaders import DataSplits
from hardbatch.data.memory import (
    InMemoryDataset,
    RelabelledDataset,
    dataset_labels,
    gives_batches,
    keep_batch,
    subset,
    with_labels,
)
from hardbatch.data.readers import (
    RawData,
    read_cifar10,
    read_cifar100,
    read_digits,
    read_fashion_mnist,
    read_imagefolder,
    read_mnist1d,
    read_stl10,
)
from hardbatch.data.registry import (
    DATASETS,
    DatasetSpec,
    check_signal_options,
    dataset_spec,
    default_model,
    default_models_text,
    load_dataset,
    register_dataset,
)
from hardbatch.data.splits import (
    Relabelling,
    balanced_subset,
    hold_out,
    long_tail_counts,
    long_tailed,
    noisy_labels,
    reshape_train,
    stratified_split,
)
from hardbatch.data.transforms import IMAGENET_MEAN, IMAGENET_STD, BatchTransform, normalisation, random_crop_flip

__all__ = [
    "DATASETS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "BatchTransform",
    "DataSplits",
    "DatasetSpec",
    "InMemoryDataset",
    "RawData",
    "RelabelledDataset",
    "Relabelling",
    "balanced_subset",
    "check_signal_options",
    "dataset_labels",
    "dataset_spec",
    "default_model",
    "default_models_text",
    "gives_batches",
    "hold_out",
    "keep_batch",
    "load_dataset",
    "long_tail_counts",
    "long_tailed",
    "noisy_labels",
    "normalisation",
    "random_crop_flip",
    "read_cifar10",
    "read_cifar100",
    "read_digits",
    "read_fashion_mnist",
    "read_imagefolder",
    "read_mnist1d",
    "read_stl10",
    "register_dataset",
    "reshape_train",
    "stratified_split",
    "subset",
    "with_labels",
]
