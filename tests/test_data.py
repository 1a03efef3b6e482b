"""resdsl.data: file formats against hand-built files, the split, augmentation and the loader."""

from __future__ import annotations

import gzip
import os
import pickle
import re
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from measured import run_measured

from resdsl.data import (
    Augment,
    DataError,
    Dataset,
    Loader,
    find_data,
    load_dataset,
    pixel_mean,
    split,
)

pytestmark = pytest.mark.torch

FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def no_user_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the user's $RESDSL_DATA and ~/.cache out of every lookup."""
    monkeypatch.delenv("RESDSL_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def cifar_row(image: np.ndarray) -> bytes:
    """One CIFAR row written out pixel by pixel: 1024 red bytes, then green, then blue, each plane row-major."""
    return bytes(int(image[c, y, x]) for c in range(3) for y in range(32) for x in range(32))


def write_cifar_batch(path: Path, images: np.ndarray, labels: list[int], label_key: bytes = b"labels") -> None:
    data = np.frombuffer(b"".join(cifar_row(image) for image in images), dtype=np.uint8).reshape(len(images), 3072)
    batch = {
        b"batch_label": b"training batch",
        label_key: labels,
        b"data": data,
        b"filenames": [f"img_{i}.png".encode() for i in range(len(images))],
    }
    path.write_bytes(pickle.dumps(batch, protocol=2))


def hand_images(count: int, offset: int) -> np.ndarray:
    """Images whose every pixel encodes its image, channel, row and column, so any mix-up shows."""
    n, c, y, x = np.meshgrid(np.arange(count), np.arange(3), np.arange(32), np.arange(32), indexing="ij")
    return ((offset + n) * 37 + c * 101 + y * 7 + x * 3).astype(np.uint8) % 251


@pytest.fixture
def cifar10_dir(tmp_path: Path) -> Path:
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    for b in range(1, 6):
        write_cifar_batch(root / f"data_batch_{b}", hand_images(2, offset=2 * b), [b, (b + 5) % 10])
    write_cifar_batch(root / "test_batch", hand_images(3, offset=100), [7, 8, 9])
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    (root / "batches.meta").write_bytes(pickle.dumps({b"label_names": names, b"num_vis": 3072}, protocol=2))
    return root


def test_cifar10_train_reads_batches_1_to_5_in_order(cifar10_dir: Path) -> None:
    data = load_dataset("cifar10", cifar10_dir, train=True)
    expected = np.concatenate([hand_images(2, offset=2 * b) for b in range(1, 6)])
    assert data.images.dtype == torch.uint8
    assert torch.equal(data.images, torch.from_numpy(expected))
    assert data.labels.tolist() == [1, 6, 2, 7, 3, 8, 4, 9, 5, 0]
    assert (data.classes, data.shape) == (10, (3, 32, 32))


def test_cifar10_test_split_reads_test_batch(cifar10_dir: Path) -> None:
    data = load_dataset("cifar10", cifar10_dir, train=False)
    assert torch.equal(data.images, torch.from_numpy(hand_images(3, offset=100)))
    assert data.labels.dtype == torch.int64
    assert data.labels.tolist() == [7, 8, 9]


def test_cifar10_found_in_the_folder_the_archive_unpacks_to(cifar10_dir: Path) -> None:
    assert find_data("cifar10", cifar10_dir.parent) == cifar10_dir


def test_cifar100_uses_fine_labels(tmp_path: Path) -> None:
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    write_cifar_batch(root / "train", hand_images(2, offset=0), [42, 99], label_key=b"fine_labels")
    write_cifar_batch(root / "test", hand_images(1, offset=5), [3], label_key=b"fine_labels")
    data = load_dataset("cifar100", find_data("cifar100", tmp_path), train=True)
    assert data.labels.tolist() == [42, 99]
    assert data.classes == 100
    assert torch.equal(data.images, torch.from_numpy(hand_images(2, offset=0)))


def test_data_dir_found_under_resdsl_data(cifar10_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (cifar10_dir.parent / "cifar10").mkdir()
    cifar10_dir.rename(cifar10_dir.parent / "cifar10" / "cifar-10-batches-py")
    monkeypatch.setenv("RESDSL_DATA", str(cifar10_dir.parent))
    assert find_data("cifar10", None) == cifar10_dir.parent / "cifar10" / "cifar-10-batches-py"


@pytest.fixture(scope="module")
def fashion_train() -> Dataset:
    if not FASHION.is_dir():
        pytest.skip("the Debian fashion-mnist package is not installed")
    return load_dataset("fashion-mnist", FASHION, train=True)


def test_fashion_mnist_found_in_system_copy() -> None:
    if not FASHION.is_dir():
        pytest.skip("the Debian fashion-mnist package is not installed")
    assert find_data("fashion-mnist", None) == FASHION


def test_fashion_mnist_train_has_60000_images_6000_per_class(fashion_train: Dataset) -> None:
    assert fashion_train.images.shape == (60000, 1, 28, 28)
    assert fashion_train.classes == 10
    assert torch.bincount(fashion_train.labels).tolist() == [6000] * 10
    # the first labels as listed in the Fashion-MNIST README: ankle boot, T-shirt, T-shirt, dress, ...
    assert fashion_train.labels[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]


def test_fashion_mnist_test_pixels_match_torchvision_reader(tmp_path: Path) -> None:
    if not FASHION.is_dir():
        pytest.skip("the Debian fashion-mnist package is not installed")
    from torchvision.datasets.mnist import read_image_file, read_label_file

    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (tmp_path / name).write_bytes(gzip.decompress((FASHION / f"{name}.gz").read_bytes()))
    data = load_dataset("fashion-mnist", FASHION, train=False)
    assert torch.equal(data.images[:, 0], read_image_file(str(tmp_path / "t10k-images-idx3-ubyte")))
    assert torch.equal(data.labels, read_label_file(str(tmp_path / "t10k-labels-idx1-ubyte")))


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(root: Path, images: np.ndarray, labels: np.ndarray, gz: bool) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for prefix in ("train", "t10k"):
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            raw, name = idx_bytes(array), f"{prefix}-{kind}-ubyte"
            if gz:
                (root / f"{name}.gz").write_bytes(gzip.compress(raw))
            else:
                (root / name).write_bytes(raw)


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzipped"])
def test_mnist_idx_files_read_plain_or_gzipped(tmp_path: Path, gz: bool) -> None:
    images = np.arange(3 * 5 * 4).reshape(3, 5, 4)
    write_mnist(tmp_path / "mnist", images, np.array([4, 0, 9]), gz)
    data = load_dataset("mnist", find_data("mnist", tmp_path / "mnist"), train=True)
    assert torch.equal(data.images, torch.from_numpy(images.astype(np.uint8)).unsqueeze(1))
    assert data.labels.tolist() == [4, 0, 9]
    assert data.shape == (1, 5, 4)


def test_missing_data_names_every_path_searched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESDSL_DATA", str(tmp_path / "shared"))
    with pytest.raises(DataError) as caught:
        find_data("cifar10", None)
    message = str(caught.value)
    for tried in (tmp_path / "shared" / "cifar10", tmp_path / "home" / ".cache/resdsl/cifar10"):
        assert str(tried) in message
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in message and "--data DIR" in message
    assert "\n" not in message


def test_nonexistent_data_dir_is_refused_though_another_copy_exists(cifar10_dir: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESDSL_DATA", str(cifar10_dir.parent))
    (cifar10_dir.parent / "cifar10").mkdir()
    cifar10_dir.rename(cifar10_dir.parent / "cifar10" / "cifar-10-batches-py")
    nowhere = cifar10_dir.parent / "nowhere"
    with pytest.raises(DataError) as caught:
        find_data("cifar10", nowhere)
    assert str(caught.value) == f"no cifar10 data found in {nowhere}: {nowhere} does not exist"


def test_data_dir_without_the_dataset_is_refused_though_another_copy_exists(
        tmp_path: Path, cifar10_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESDSL_DATA", str(cifar10_dir.parent))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no cifar10 data found in .*/empty: cifar10 is read from .*; "
                                        r"download .* unpack it into it$"):
        find_data("cifar10", tmp_path / "empty")


def test_unknown_dataset_is_refused() -> None:
    with pytest.raises(DataError, match="unknown dataset 'svhn'"):
        find_data("svhn", None)


def test_truncated_cifar_batch_is_refused(cifar10_dir: Path) -> None:
    batch = cifar10_dir / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:5000])
    with pytest.raises(DataError, match="data_batch_3 is not a readable CIFAR batch"):
        load_dataset("cifar10", cifar10_dir, train=True)


def test_missing_cifar_batch_is_refused(cifar10_dir: Path) -> None:
    (cifar10_dir / "data_batch_5").unlink()
    with pytest.raises(DataError, match="data_batch_5 is missing"):
        load_dataset("cifar10", cifar10_dir, train=True)


def test_pickle_with_foreign_code_is_refused(cifar10_dir: Path) -> None:
    (cifar10_dir / "test_batch").write_bytes(pickle.dumps({b"data": Path("x"), b"labels": []}))
    with pytest.raises(DataError, match="test_batch is not a readable CIFAR batch"):
        load_dataset("cifar10", cifar10_dir, train=False)


def test_truncated_idx_file_is_refused(tmp_path: Path) -> None:
    write_mnist(tmp_path, np.zeros((4, 28, 28)), np.zeros(4), gz=False)
    images = tmp_path / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-100])
    with pytest.raises(DataError, match="truncated"):
        load_dataset("mnist", tmp_path, train=True)


def test_truncated_gzip_is_refused(tmp_path: Path) -> None:
    write_mnist(tmp_path, np.zeros((4, 28, 28)), np.zeros(4), gz=True)
    labels = tmp_path / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:-10])
    with pytest.raises(DataError, match="not a readable gzip file"):
        load_dataset("mnist", tmp_path, train=True)


def write_gzip_bomb(path: Path, header: bytes, inflated: int) -> None:
    """A gzip file of `header` then `inflated` zero bytes, compressed a megabyte at a time (about 1000:1)."""
    with gzip.open(path, "wb") as file:
        file.write(header)
        for _ in range(inflated >> 20):
            file.write(bytes(1 << 20))


_LOAD_MNIST = """
import sys
from pathlib import Path
from resdsl.data import DataError, load_dataset
try:
    load_dataset("mnist", Path(sys.argv[1]), train=True)
    print("loaded")
except DataError as error:
    print(error)
"""


def test_gzip_bomb_is_refused_before_it_is_inflated(tmp_path: Path) -> None:
    honest, bomb = tmp_path / "honest", tmp_path / "bomb"
    for folder in (honest, bomb):
        folder.mkdir()
        write_mnist(folder, np.zeros((4, 28, 28)), np.zeros(4), gz=True)
    # the header promises 4 images of 28x28 (3,136 bytes); the stream inflates to 256 MiB
    write_gzip_bomb(bomb / "train-images-idx3-ubyte.gz", idx_bytes(np.zeros((4, 28, 28)))[:16], 256 << 20)
    loaded = run_measured([sys.executable, "-c", _LOAD_MNIST, str(honest)], tmp_path)
    refused = run_measured([sys.executable, "-c", _LOAD_MNIST, str(bomb)], tmp_path)
    assert loaded.stdout.strip() == "loaded"
    assert "more than the 3,136 bytes of data its header promises" in refused.stdout
    assert refused.max_rss_bytes - loaded.max_rss_bytes < 32 << 20  # far below the 256 MiB it would inflate to


def test_idx_header_promising_more_than_the_limit_is_refused_before_reading(tmp_path: Path) -> None:
    write_mnist(tmp_path, np.zeros((4, 28, 28)), np.zeros(4), gz=False)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">3I", 60000, 4096, 4096))
    with pytest.raises(DataError, match="promises 60000x4096x4096 = 1,006,632,960,000 bytes, more than the"):
        load_dataset("mnist", tmp_path, train=True)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_pipe_in_place_of_an_idx_file_is_not_a_regular_file(tmp_path: Path) -> None:
    write_mnist(tmp_path, np.zeros((4, 28, 28)), np.zeros(4), gz=False)
    (tmp_path / "train-labels-idx1-ubyte").unlink()
    os.mkfifo(tmp_path / "train-labels-idx1-ubyte")  # opening it to read would wait for a writer
    with pytest.raises(DataError) as caught:
        load_dataset("mnist", tmp_path, train=True)
    pipe = tmp_path / "train-labels-idx1-ubyte"
    assert str(caught.value) == f"{pipe} is not a regular file, so it is not an idx file"


def test_file_that_is_not_idx_says_what_was_expected(tmp_path: Path) -> None:
    write_mnist(tmp_path, np.zeros((4, 28, 28)), np.zeros(4), gz=False)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"<html>not found</html>")
    with pytest.raises(DataError, match="must start with the bytes 00 00 08 01 and 1 big-endian sizes"):
        load_dataset("mnist", tmp_path, train=True)


def test_oversized_cifar_batch_is_refused_before_unpickling(cifar10_dir: Path) -> None:
    with (cifar10_dir / "test_batch").open("r+b") as file:
        file.truncate(201 << 20)  # sparse: no disk written
    with pytest.raises(DataError, match="test_batch is 210,763,776 bytes; a CIFAR batch file is at most"):
        load_dataset("cifar10", cifar10_dir, train=False)


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzipped"])
def test_label_count_mismatch_names_the_files_read(tmp_path: Path, gz: bool) -> None:
    write_mnist(tmp_path, np.zeros((4, 28, 28)), np.zeros(3), gz=gz)
    suffix = ".gz" if gz else ""
    with pytest.raises(DataError, match=re.escape(f"train-labels-idx1-ubyte{suffix} holds 3 labels for the 4 images "
                                                  f"of {tmp_path / 'train-images-idx3-ubyte'}{suffix}")):
        load_dataset("mnist", tmp_path, train=True)


def test_a_label_out_of_range_names_the_gzipped_file_read(tmp_path: Path) -> None:
    write_mnist(tmp_path, np.zeros((4, 28, 28)), np.array([0, 1, 2, 10]), gz=True)
    with pytest.raises(DataError, match=re.escape("train-labels-idx1-ubyte.gz holds label 10, outside 0..9")):
        load_dataset("mnist", tmp_path, train=True)


def numbered(count: int) -> Dataset:
    """A dataset whose labels are the image indices."""
    images = torch.arange(count, dtype=torch.uint8).view(count, 1, 1, 1).expand(count, 1, 2, 2).contiguous()
    return Dataset(images, torch.arange(count), classes=count, name="numbered")


def test_split_is_disjoint_and_covers_everything() -> None:
    train, val = split(numbered(50), 5)
    assert (len(train), len(val)) == (45, 5)
    assert sorted(train.labels.tolist() + val.labels.tolist()) == list(range(50))
    assert torch.equal(train.images[:, 0, 0, 0].long(), train.labels)


def test_split_is_deterministic_per_seed() -> None:
    first, second, other = (split(numbered(50), 5, seed)[1].labels.tolist() for seed in (3, 3, 4))
    assert first == second
    assert first != other


def test_pixel_mean_is_the_mean_image_in_unit_scale() -> None:
    images = torch.tensor([[[[0, 255]]], [[[255, 255]]]], dtype=torch.uint8)
    mean = pixel_mean(Dataset(images, torch.zeros(2, dtype=torch.int64), classes=1, name="two"))
    assert torch.allclose(mean, torch.tensor([[[0.5, 1.0]]]))


def grid_image(count: int, size: int = 4) -> torch.Tensor:
    """`count` copies of a 1 x size x size image holding 1..size*size row-major."""
    return torch.arange(1, size * size + 1, dtype=torch.uint8).view(1, 1, size, size).repeat(count, 1, 1, 1)


def test_flip_gives_the_image_or_its_mirror_and_both_occur() -> None:
    image = grid_image(1)[0].float() / 255
    out = Augment(flip=True)(grid_image(64), torch.Generator().manual_seed(0))
    mirrored = torch.tensor([torch.equal(view, image[..., [3, 2, 1, 0]]) for view in out])
    plain = torch.tensor([torch.equal(view, image) for view in out])
    assert (mirrored | plain).all()
    assert mirrored.any() and plain.any()


def test_pad_crop_gives_every_window_of_the_zero_padded_image() -> None:
    padded = torch.zeros(1, 6, 6)
    padded[:, 1:5, 1:5] = grid_image(1)[0].float() / 255
    windows = {(top, left): padded[:, top:top + 4, left:left + 4] for top in range(3) for left in range(3)}
    out = Augment(pad=1, crop=4)(grid_image(200), torch.Generator().manual_seed(1))
    seen = set()
    for view in out:
        matches = [key for key, window in windows.items() if torch.equal(view, window)]
        assert len(matches) == 1
        seen.add(matches[0])
    assert seen == set(windows)


def test_augment_output_is_float32_crop_sized() -> None:
    out = Augment(pad=4, crop=32, flip=True)(torch.zeros(5, 3, 32, 32, dtype=torch.uint8))
    assert out.dtype == torch.float32
    assert out.shape == (5, 3, 32, 32)


def test_mean_is_subtracted_before_padding() -> None:
    images = torch.full((8, 1, 2, 2), 51, dtype=torch.uint8)
    mean = torch.full((1, 2, 2), 0.1)
    out = Augment(pad=2, crop=2, mean=mean)(images, torch.Generator().manual_seed(0))
    padding, image = out == 0, (out - 0.1).abs() < 1e-6
    assert (padding | image).all()
    assert padding.any() and image.any()
    assert torch.allclose(Augment(mean=mean).eval(images), torch.full((8, 1, 2, 2), 0.1))


def test_per_pixel_mean_and_std_normalise_each_pixel() -> None:
    images = torch.tensor([[[[0, 255], [51, 102]]]], dtype=torch.uint8)
    mean = torch.tensor([[[0.0, 0.5], [0.2, 0.2]]])
    out = Augment(mean=mean, std=torch.tensor([0.5])).eval(images)
    assert torch.allclose(out, torch.tensor([[[[0.0, 1.0], [0.0, 0.4]]]]))


def test_augment_is_deterministic_given_a_generator() -> None:
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    augment = Augment(pad=4, crop=32, flip=True)
    first, second, other = (augment(images, torch.Generator().manual_seed(s)) for s in (5, 5, 6))
    assert torch.equal(first, second)
    assert not torch.equal(first, other)


def test_eval_centre_crops() -> None:
    out = Augment(crop=2).eval(grid_image(1))
    assert torch.equal(out * 255, torch.tensor([[[[6.0, 7.0], [10.0, 11.0]]]]))


def test_scale_at_full_size_is_the_image_or_its_mirror() -> None:
    images = grid_image(32, size=8)
    out = Augment(scale=(8, 8), crop=8, flip=True)(images, torch.Generator().manual_seed(0))
    image = images[0].float() / 255
    for view in out:
        assert torch.allclose(view, image, atol=1e-6) or torch.allclose(view, image.flip(-1), atol=1e-6)


def test_scale_to_half_averages_each_2x2_block() -> None:
    images = grid_image(4, size=8)
    out = Augment(scale=(4, 4), crop=4)(images, torch.Generator().manual_seed(0))
    assert torch.allclose(out, F.avg_pool2d(images.float() / 255, 2), atol=1e-6)


def test_scale_eval_resizes_to_lower_bound_and_centre_crops() -> None:
    images = grid_image(1, size=8)
    out = Augment(scale=(4, 6), crop=2).eval(images)
    assert torch.allclose(out, F.avg_pool2d(images.float() / 255, 2)[..., 1:3, 1:3], atol=1e-6)


def served(loader: Loader, batches: int) -> list[list[int]]:
    """The labels of the next `batches` batches, across epochs."""
    out = []
    for _, labels in loader.forever():
        out.append(labels.tolist())
        if len(out) == batches:
            return out
    return out


def test_loader_shards_are_disjoint_and_equal_sized() -> None:
    data = numbered(23)
    ranks = [Loader(data, 3, seed=7, rank=r, world_size=2) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 3
    first, second = ([label for _, labels in loader for label in labels.tolist()] for loader in ranks)
    assert not set(first) & set(second)
    assert len(set(first)) == len(first) == 9


def test_loader_without_drop_last_serves_everything_in_order() -> None:
    loader = Loader(numbered(7), 3, shuffle=False, drop_last=False)
    assert [labels.tolist() for _, labels in loader] == [[0, 1, 2], [3, 4, 5], [6]]
    assert loader.epoch == 1


def test_loader_batches_pair_images_with_labels() -> None:
    images, labels = next(iter(Loader(numbered(10), 4, seed=1)))
    assert images.dtype == torch.uint8
    assert torch.equal(images[:, 0, 0, 0].long(), labels)


def test_loader_epochs_differ_and_cover_the_data() -> None:
    loader = Loader(numbered(12), 4, seed=0)
    epochs = [[label for _, labels in loader for label in labels.tolist()] for _ in range(2)]
    assert sorted(epochs[0]) == sorted(epochs[1]) == list(range(12))
    assert epochs[0] != epochs[1]


@pytest.mark.parametrize("consumed", [2, 3, 5], ids=["mid-epoch", "end-of-epoch", "next-epoch"])
def test_loader_resume_serves_the_same_following_batches(consumed: int) -> None:
    data = numbered(13)
    reference = served(Loader(data, 4, seed=3), consumed + 4)
    interrupted = Loader(data, 4, seed=3)
    assert served(interrupted, consumed) == reference[:consumed]
    resumed = Loader(data, 4, seed=0)
    resumed.load_state_dict(interrupted.state_dict())
    assert served(resumed, 4) == reference[consumed:]


def test_loader_refuses_a_batch_larger_than_the_data() -> None:
    with pytest.raises(DataError, match="too few images"):
        Loader(numbered(5), 8)


def test_missing_fashion_mnist_names_the_real_debian_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from resdsl.data import locate

    monkeypatch.setitem(locate.SYSTEM_COPIES, "fashion-mnist", tmp_path / "absent")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("RESDSL_DATA", raising=False)
    with pytest.raises(DataError) as caught:
        find_data("fashion-mnist", None)
    assert "`sudo apt-get install dataset-fashion-mnist`" in str(caught.value)
    assert "package fashion-mnist" not in str(caught.value)


@pytest.mark.parametrize(("dataset", "file"), [("cifar10", "data_batch_1"), ("cifar100", "train, test and meta"),
                                               ("fashion-mnist", "train-images-idx3-ubyte"),
                                               ("mnist", "t10k-labels-idx1-ubyte"), ("imagenet", "val/<wnid>/*.JPEG"),
                                               ("imagefolder", "train/<class>/")])
def test_missing_data_says_which_files_are_expected(dataset: str, file: str, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=re.escape(file)):
        find_data(dataset, tmp_path)


def test_pipe_named_like_an_image_is_skipped_and_never_read(tmp_path: Path) -> None:
    from resdsl.data.images import list_folder, read_file

    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "a.jpg").write_bytes(b"x")
    os.mkfifo(tmp_path / "cat" / "b.jpg")
    paths, _, _ = list_folder(tmp_path)
    assert paths == [tmp_path / "cat" / "a.jpg"]
    with pytest.raises(DataError, match=r"b.jpg is not a regular file"):
        read_file(tmp_path / "cat" / "b.jpg")  # before: read_bytes() waited for a writer forever
