"""hardbatch.data.registry: the data-set table (every row's reader, default model and kind of sample) and
load_dataset's checks of a configuration against the data set it names."""

from __future__ import annotations

import pytest

from hardbatch.config import RunConfig
from hardbatch.data import DATASETS, DatasetSpec, default_model, default_models_text, load_dataset, register_dataset
from hardbatch.data.readers import read_digits
from hardbatch.errors import UsageError
from hardbatch.models import MODEL_INPUTS

KIND = {2: "image", 1: "signal"}  # DatasetSpec.dims -> the kind of input a model takes (hardbatch.models)
FROM_FILES = ["cifar10", "cifar100", "stl10", "imagefolder"]  # the data sets that exist only in --data-dir
ARCHIVES = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python", "stl10": "stl10_binary"}


@pytest.mark.parametrize("name", list(DATASETS))
def test_every_data_set_brings_a_registered_model_for_its_kind_of_sample(name):
    spec = DATASETS[name]
    assert spec.name == name and spec.dims in KIND and spec.description
    assert MODEL_INPUTS[spec.default_model] == KIND[spec.dims]
    assert default_model(name) == spec.default_model
    assert f"{name} {spec.default_model}" in default_models_text().split(", ")


def test_the_default_models_are_the_ones_chosen_per_data_set():
    assert {name: default_model(name) for name in DATASETS} == {
        "digits": "small_cnn",
        "cifar10": "resnet18",
        "cifar100": "resnet18",
        "stl10": "resnet18",
        "fashion-mnist": "lenet",
        "imagefolder": "resnet18",
        "mnist1d": "cnn1d",
    }


def test_unknown_names_list_the_valid_ones():
    for call in (lambda: default_model("mnist"), lambda: load_dataset(RunConfig(dataset="mnist"))):
        with pytest.raises(UsageError, match=r"unknown dataset 'mnist'; valid: digits, cifar10, .*mnist1d"):
            call()


@pytest.mark.parametrize(
    "spec, words",
    [
        (DatasetSpec("digits", read_digits, "twice", "small_cnn"), "'digits' is already registered"),
        (
            DatasetSpec("signals", read_digits, "1-D", "small_cnn", dims=1),
            "'small_cnn' is not a registered model for 1-D",
        ),
        (DatasetSpec("pictures", read_digits, "2-D", "cnn1d"), "'cnn1d' is not a registered model for images"),
        (DatasetSpec("pictures", read_digits, "2-D", "alexnet"), "'alexnet' is not a registered model for images"),
    ],
)
def test_the_table_refuses_a_second_row_of_a_name_and_a_default_model_that_cannot_take_its_data(spec, words):
    before = dict(DATASETS)
    with pytest.raises(ValueError, match=words):
        register_dataset(spec)
    assert before == DATASETS


@pytest.mark.parametrize("name", FROM_FILES)
def test_file_data_sets_need_a_data_dir(name):
    with pytest.raises(UsageError, match="--data-dir"):
        DATASETS[name].read(None)


@pytest.mark.parametrize("name", list(ARCHIVES))
def test_missing_files_name_the_expected_path_and_download(tmp_path, name):
    with pytest.raises(UsageError) as err:
        DATASETS[name].read(str(tmp_path))
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / ARCHIVES[name]) in message and "--download" in message


BAD_DATA_OPTIONS = [
    (["--augment", "crop_flip"], ["mnist1d", "1-D signals", "--augment crop_flip", "images only"]),
    (["--image-size", "32"], ["--image-size 32", "images only"]),
    (["--stem", "small"], ["--stem small", "images only"]),
    (["--normalize", "imagenet"], ["--normalize imagenet", "images only"]),
    (
        ["--protocol", "modern"],
        ["--augment crop_flip", "--stem small", "--protocol modern", "--augment none --stem imagenet"],
    ),
    (["--protocol", "paper"], ["--image-size 128", "--normalize imagenet", "drop --protocol paper"]),
    # checked with the other settings (config.check), which name the setting by its keyword
    (["--mnist1d-samples", "45"], ["--mnist1d-samples must be", "multiple of 10", "45"]),
    (
        ["--dataset", "digits", "--mnist1d-samples", "6000"],
        ["--mnist1d-samples applies to dataset mnist1d only", "digits"],
    ),
]


@pytest.mark.parametrize("args,words", BAD_DATA_OPTIONS, ids=[" ".join(a) for a, _ in BAD_DATA_OPTIONS])
def test_image_options_and_bad_sizes_are_refused_before_anything_is_written(
    train, generated, tmp_path, args, words, one_line_error, files_under
):
    before = files_under(tmp_path)
    status, out, err = train(
        "--dataset",
        "mnist1d",
        "--model",
        "cnn1d",
        "--epochs",
        "1",
        "--data-dir",
        generated.folder,
        "--out",
        tmp_path / "run",
        *args,
    )
    assert status == 2 and out == ""
    one_line_error(err, *words)
    assert files_under(tmp_path) == before
