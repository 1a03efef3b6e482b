"""The dataset registry: every record is complete, and a dataset added in one file trains through `resdsl train`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from resdsl.data import DATASETS, DataError, DatasetRecord, find_data, load_dataset, register
from resdsl.data.datasets import records_in, unregister

pytestmark = pytest.mark.torch

FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_every_dataset_record_is_complete(name: str) -> None:
    record = DATASETS[name]
    assert record.name == name
    assert record.files and record.markers and "one of them" in record.source
    assert record.subdirs[0] == ""  # the directory itself is searched first
    assert record.classes is None or record.classes >= 2
    assert record.image_shape is None or (len(record.image_shape) == 3 and min(record.image_shape) > 0)
    assert (record.package is None) == (record.system_copy is None)
    assert callable(record.load)
    assert not set(record.aliases) & set(DATASETS)


def test_the_aliases_of_different_datasets_differ() -> None:
    aliases = [alias for record in DATASETS.values() for alias in record.aliases]
    assert len(aliases) == len(set(aliases))


@pytest.mark.skipif(not FASHION.is_dir(), reason="needs the Debian package dataset-fashion-mnist")
def test_fashion_mnist_record_matches_the_published_data() -> None:
    record = DATASETS["fashion-mnist"]
    assert record.system_copy == FASHION  # where dataset-fashion-mnist installs it
    test = load_dataset("fashion-mnist", find_data("fashion-mnist", None), train=False)
    # Xiao et al. 2017: 10,000 test images of 28x28 greyscale in 10 classes
    assert (len(test), test.shape, test.classes) == (10000, record.image_shape, record.classes)


def test_registering_a_dataset_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register(DATASETS["mnist"])


# A dataset in one file: a tensor file per split, read by its own loader.
TENSORSET = '''
"""tensorset: 12x12 greyscale images in 10 classes, one torch file per split."""

from pathlib import Path

from resdsl.data import DatasetRecord


def load(record: DatasetRecord, root: Path, train: bool):
    import torch

    from resdsl.data import Dataset

    saved = torch.load(root / ("train.pt" if train else "test.pt"), weights_only=True)
    return Dataset(saved["images"], saved["labels"], record.classes, record.name)


RECORD = DatasetRecord(name="tensorset", files="train.pt and test.pt", markers=("train.pt",), subdirs=("",),
                       source="save them into one of them", load=load, classes=10, image_shape=(1, 12, 12))
'''


@pytest.fixture
def tensorset(tmp_path: Path) -> Path:
    """A folder holding tensorset.py (the dataset's one file) and data/ with its two splits; registered."""
    (tmp_path / "tensorset.py").write_text(TENSORSET)
    (tmp_path / "data").mkdir()
    generator = torch.Generator().manual_seed(0)
    for split, count in (("train", 96), ("test", 32)):
        labels = torch.randint(10, (count,), generator=generator)
        images = torch.randint(0, 60, (count, 1, 12, 12), generator=generator, dtype=torch.uint8)
        images[torch.arange(count), 0, labels + 1] = 250
        torch.save({"images": images, "labels": labels}, tmp_path / "data" / f"{split}.pt")
    sys.path.insert(0, str(tmp_path))
    import tensorset as module

    register(module.RECORD)
    yield tmp_path
    unregister("tensorset")
    sys.path.remove(str(tmp_path))
    del sys.modules["tensorset"]


def test_a_dataset_in_one_file_loads_through_load_dataset(tensorset: Path) -> None:
    test = load_dataset("tensorset", find_data("tensorset", tensorset / "data"), train=False)
    saved = torch.load(tensorset / "data" / "test.pt", weights_only=True)
    assert torch.equal(test.images, saved["images"]) and torch.equal(test.labels, saved["labels"])
    assert (test.shape, test.classes) == ((1, 12, 12), 10)


def test_a_dataset_in_one_file_gets_the_missing_data_message(tensorset: Path) -> None:
    with pytest.raises(DataError, match=r"tensorset is read from train.pt and test.pt; save them into it$"):
        find_data("tensorset", tensorset)


def test_a_dataset_module_is_registered_by_being_in_the_package(tmp_path: Path) -> None:
    # resdsl.data.datasets registers every module of its own package this way: no line to add elsewhere
    (tmp_path / "moresets").mkdir()
    (tmp_path / "moresets" / "__init__.py").write_text("")
    (tmp_path / "moresets" / "tensorset.py").write_text(TENSORSET)
    sys.path.insert(0, str(tmp_path))
    try:
        import moresets

        assert [record.name for record in records_in(moresets)] == ["tensorset"]
    finally:
        sys.path.remove(str(tmp_path))
        for name in ("moresets", "moresets.tensorset"):
            sys.modules.pop(name, None)


def test_the_shipped_datasets_are_registered() -> None:
    assert list(DATASETS)[:6] == ["cifar10", "cifar100", "fashion-mnist", "mnist", "imagefolder", "imagenet"]


TRAIN_WITH_TENSORSET = """
import sys
sys.path.insert(0, ".")
import tensorset
from resdsl.data import register
from resdsl.cli.app import main
register(tensorset.RECORD)
sys.argv[0] = "resdsl"
main()
"""


def test_a_dataset_in_one_file_trains_through_resdsl_train(tensorset: Path, resdsl_cli) -> None:
    from conftest import TINY_SPEC

    (tensorset / "tiny.res").write_text(TINY_SPEC.replace("dataset mnist", 'dataset "tensorset"'))
    result = resdsl_cli("train", "tiny.res", "--data", "data", "--out", "run", "--iterations", "4", "--device", "cpu",
                        cwd=tensorset, script=TRAIN_WITH_TENSORSET)
    assert result.returncode == 0, result.stderr
    assert json.loads((tensorset / "run" / "config.json").read_text())["recipe"]["dataset"] == "tensorset"
    records = [json.loads(line) for line in (tensorset / "run" / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["iteration"] == 4


def test_a_record_is_a_plain_frozen_value() -> None:
    with pytest.raises(AttributeError):
        DATASETS["mnist"].classes = 3  # type: ignore[misc]
    assert isinstance(DATASETS["mnist"], DatasetRecord)
