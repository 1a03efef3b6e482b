"""Image folders: the views against torchvision and fb.resnet.torch, PCA lighting, and the worker loader."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from resdsl.data import Augment, DataError, Loader, find_data, folder, load_dataset, pixel_mean
from resdsl.data import images as image_files
from resdsl.data.augment import pca_offsets
from resdsl.data.images import decode, decode_on_device, read_file
from resdsl.data.views import EvalView, TrainView, resized_size
from resdsl.train.data import InputWatch

pytestmark = pytest.mark.torch


def smooth_image(height: int, width: int) -> torch.Tensor:
    """A uint8 3 x H x W image of slow waves, so that a sub-pixel shift changes a pixel by a level or two."""
    y, x = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    return (128 + 100 * torch.sin(torch.stack([x / 37, y / 23, (x + y) / 51]))).to(torch.uint8)


def random_image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("crop", "side"), [(224, 256), (64, 73)])
def test_centre_view_is_torchvisions_resize_then_centre_crop(crop: int, side: int) -> None:
    for height, width in ((375, 500), (500, 333), (81, 81)):
        image = random_image(height, width)
        expected = TF.center_crop(TF.resize(image, [side], antialias=True), [crop])
        (view,) = EvalView("center", crop)(image)
        assert torch.equal(view, expected)


def test_ten_crop_view_is_torchvisions_ten_crop() -> None:
    image = random_image(375, 500)
    expected = TF.ten_crop(TF.resize(image, [256], antialias=True), [224])
    views = EvalView("10crop", 224)(image)
    assert len(views) == 10
    for view, reference in zip(views, expected, strict=True):
        assert torch.equal(view, reference)


@pytest.mark.parametrize(("crop", "sides"), [(224, [224, 256, 384, 480, 640]), (64, [64, 73, 110, 137, 183])])
def test_multiscale_view_is_the_whole_image_at_the_papers_sides(crop: int, sides: list[int]) -> None:
    image = random_image(300, 400)
    views = EvalView("multiscale", crop)(image)
    assert [min(view.shape[-2:]) for view in views] == sides
    for view, side in zip(views, sides, strict=True):
        assert torch.equal(view, TF.resize(image, [side], antialias=True))


def fb_resnet_torch_view(image: torch.Tensor, side: int, x1: int, y1: int, mirror: bool, crop: int) -> torch.Tensor:
    """fb.resnet.torch's transforms.lua, transcribed: RandomScale(min, max) with the drawn side, then
    RandomCrop(crop) at the drawn corner, then HorizontalFlip (bilinear here where the Lua default is bicubic)."""
    height, width = image.shape[-2:]
    if width < height:
        target_w, target_h = side, round(height / width * side)
    else:
        target_w, target_h = round(width / height * side), side
    scaled = TF.resize(image, [target_h, target_w], antialias=True)
    out = scaled[:, y1:y1 + crop, x1:x1 + crop]
    return out.flip(-1) if mirror else out


def test_training_view_is_fb_resnet_torchs_random_scale_crop_and_flip() -> None:
    crop, view = 224, TrainView(224, (256, 480), flip=True)
    for height, width in ((375, 500), (500, 333)):
        image = smooth_image(height, width)
        for side in (256, 311, 480):
            new_h, new_w = resized_size(height, width, side, exact=round)
            for x1, y1 in ((0, 0), (new_w - crop, new_h - crop), (17, 5)):
                for mirror in (False, True):
                    # the draw that puts the crop's corner at (x1, y1)
                    draw = np.array([side, (x1 + 0.5) / (new_w - crop + 1), (y1 + 0.5) / (new_h - crop + 1), mirror])
                    ours = view(image, draw).float()
                    reference = fb_resnet_torch_view(image, side, x1, y1, mirror, crop).float()
                    # only the window is resized, from a whole-pixel box: a shift under one source pixel,
                    # where the steepest wave of the image changes by 4.3 levels a pixel
                    assert (ours - reference).abs().mean() < 1.0 and (ours - reference).abs().max() <= 5


def test_training_view_draws_every_side_of_the_range_and_mirrors_half() -> None:
    draws = TrainView(224, (256, 480), flip=True).draws(40000, (0, 0, 0, 0))
    sides = draws[:, 0].astype(int)
    assert set(sides.tolist()) == set(range(256, 481))
    assert abs(sides.mean() - 368) < 1.5
    assert abs(draws[:, 3].mean() - 0.5) < 0.01
    assert (draws[:, 1:3] >= 0).all() and (draws[:, 1:3] < 1).all()


def fb_resnet_torch_lighting(image: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """fb.resnet.torch's transforms.lua Lighting(alphastd, eigval, eigvec) with its alpha given, transcribed."""
    eigval = torch.tensor([0.2175, 0.0188, 0.0045])
    eigvec = torch.tensor([[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]])
    rgb = (eigvec.clone() * alpha.view(1, 3).expand(3, 3) * eigval.view(1, 3).expand(3, 3)).sum(1)
    out = image.clone()
    for i in range(3):
        out[i] += rgb[i]
    return out


def test_pca_offsets_are_fb_resnet_torchs_lighting() -> None:
    images = torch.rand(4, 3, 5, 6, generator=torch.Generator().manual_seed(0))
    alpha = torch.randn(4, 3, generator=torch.Generator().manual_seed(1)) * 0.1
    expected = torch.stack([fb_resnet_torch_lighting(image, a) for image, a in zip(images, alpha, strict=True)])
    assert torch.allclose(images + pca_offsets(alpha)[:, :, None, None], expected, atol=1e-7)


def test_lighting_coefficients_have_the_recipes_standard_deviation() -> None:
    out = Augment(lighting=0.1)(torch.zeros(20000, 3, 1, 1, dtype=torch.uint8), torch.Generator().manual_seed(0))
    eigval = torch.tensor([0.2175, 0.0188, 0.0045])
    eigvec = torch.tensor([[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]])
    alpha = torch.linalg.solve(eigvec, out[:, :, 0, 0].T).T / eigval  # each image's offset, back to its alpha
    assert torch.allclose(alpha.std(0), torch.full((3,), 0.1), atol=0.003)
    assert torch.allclose(alpha.mean(0), torch.zeros(3), atol=0.003)


def folder_loader(folder: Path, workers: int, seed: int = 0, batch: int = 16) -> Loader:
    data = load_dataset("imagenet", folder, train=True).sized(32)
    return Loader(data, batch, seed=seed, view=TrainView(32, (36, 64), flip=True), workers=workers)


def take(loader: Loader, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for batch in loader.forever():
        out.append(batch)
        if len(out) == count:
            return out
    return out


def test_folder_batches_do_not_depend_on_the_number_of_workers(jpeg_folder: Path) -> None:
    alone, parallel = take(folder_loader(jpeg_folder, 0), 3), take(folder_loader(jpeg_folder, 2), 3)
    for (images, labels), (others, other_labels) in zip(alone, parallel, strict=True):
        assert images.shape == (16, 3, 32, 32) and images.dtype == torch.uint8
        assert torch.equal(images, others) and torch.equal(labels, other_labels)


def test_folder_loader_resumes_mid_epoch_with_the_same_crops(jpeg_folder: Path) -> None:
    reference = take(folder_loader(jpeg_folder, 1), 22)  # 18 batches an epoch: into the second
    interrupted = folder_loader(jpeg_folder, 1)
    take(interrupted, 16)
    resumed = folder_loader(jpeg_folder, 1, seed=5)
    resumed.load_state_dict(interrupted.state_dict())
    for (images, labels), (others, other_labels) in zip(take(resumed, 6), reference[16:], strict=True):
        assert torch.equal(images, others) and torch.equal(labels, other_labels)


def test_folder_crops_change_with_the_epoch_and_the_seed(jpeg_folder: Path) -> None:
    first, second = take(folder_loader(jpeg_folder, 0, batch=300), 2)  # two whole epochs
    again = take(folder_loader(jpeg_folder, 0, batch=300), 1)[0]
    other_seed = take(folder_loader(jpeg_folder, 0, seed=1, batch=300), 1)[0]
    assert torch.equal(first[0], again[0])
    assert not torch.equal(first[0], second[0])
    assert not torch.equal(first[0], other_seed[0])


def test_device_decode_equals_decode_in_the_workers(jpeg_folder: Path, tmp_path: Path) -> None:
    from PIL import Image

    paths = sorted((jpeg_folder / "val").rglob("*.JPEG"))[:3]
    Image.open(paths[0]).save(tmp_path / "x.png")  # not a JPEG: decoded on the CPU
    paths.append(tmp_path / "x.png")
    raws = [read_file(path) for path in paths]
    batched = decode_on_device(paths, raws, torch.device("cpu"))
    for path, raw, image in zip(paths, raws, batched, strict=True):
        assert torch.equal(image, decode(path, raw, "auto"))


def test_batches_decoded_in_the_main_process_equal_those_decoded_in_the_workers(
        jpeg_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the nvjpeg path (workers read the files, the batch is decoded together on the device), with the CPU
    # standing in for the GPU
    monkeypatch.setattr(folder, "check_decoder", lambda decoder, device: None)
    data = load_dataset("imagenet", jpeg_folder, train=True).sized(32)
    for view in (TrainView(32, (36, 64), flip=True), EvalView("10crop", 32)):
        batches = [take(Loader(data, 16, seed=2, view=view, workers=1, decoder=decoder), 2)
                   for decoder in ("auto", "nvjpeg")]
        for (views, labels), (others, other_labels) in zip(*batches, strict=True):
            assert torch.equal(labels, other_labels)
            assert all(torch.equal(a, b) for a, b in zip(views, others, strict=True))


def test_more_workers_than_four_per_cpu_are_refused_naming_the_flag(jpeg_folder: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(folder.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    with pytest.raises(DataError, match=r"^--workers 9 is out of range: give from 0 to 8 \(4 per CPU of the 2 "):
        folder_loader(jpeg_folder, 9)


def test_more_workers_than_cpus_run_without_torchs_warning(jpeg_folder: Path, monkeypatch: pytest.MonkeyPatch,
                                                           recwarn: pytest.WarningsRecorder) -> None:
    # torch warns of workers beyond os.sched_getaffinity's count; one CPU makes 2 workers too many for it
    monkeypatch.setattr(folder.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    images, _ = take(folder_loader(jpeg_folder, 2), 1)[0]
    assert images.shape == (16, 3, 32, 32)
    assert not [w for w in recwarn if "worker processes" in str(w.message)]


def test_torchvision_and_pil_decode_a_jpeg_alike(jpeg_folder: Path) -> None:
    path = next((jpeg_folder / "train").rglob("*.JPEG"))
    assert torch.equal(decode(path, read_file(path), "torchvision"), decode(path, read_file(path), "pil"))


def test_unreadable_image_in_a_worker_is_one_sentence_naming_it(make_image_folder: Callable) -> None:
    folder = make_image_folder({"train": 1, "val": 1})
    broken = folder / "train" / "n00000003" / "0.JPEG"
    broken.write_bytes(b"\xff\xd8 not really a JPEG")
    loader = Loader(load_dataset("imagenet", folder, train=True).sized(32), 10, shuffle=False,
                    view=TrainView(32, (32, 40), flip=False), workers=1)
    with pytest.raises(DataError) as caught:
        take(loader, 1)
    message = str(caught.value)
    assert message.startswith(f"{broken} is not a readable image: expected a JPEG or PNG file")
    assert "\n" not in message and "Traceback" not in message


def test_a_file_of_no_image_format_is_refused_without_a_python_object_in_the_message(tmp_path: Path) -> None:
    text = tmp_path / "0.jpg"
    text.write_bytes(b"name,label\ncat,3\n")
    with pytest.raises(DataError) as caught:
        decode(text, read_file(text), "auto")
    assert str(caught.value) == (f"{text} is not a readable image: expected a JPEG or PNG file (its content is no "
                                 "image format Pillow knows)")


def test_image_whose_header_promises_too_many_pixels_is_refused_before_decoding(tmp_path: Path) -> None:
    import io
    import struct

    from PIL import Image

    encoded = io.BytesIO()
    Image.new("RGB", (8, 8)).save(encoded, format="JPEG")
    data = bytearray(encoded.getvalue())
    struct.pack_into(">HH", data, data.index(b"\xff\xc0") + 5, 20000, 20000)  # SOF0: 20,000 x 20,000 (1.2 GB)
    (tmp_path / "bomb.JPEG").write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"bomb.JPEG is more than 178,956,970 pixels; resdsl decodes images of"):
        decode(tmp_path / "bomb.JPEG", read_file(tmp_path / "bomb.JPEG"), "auto")


@pytest.mark.parametrize(("decoder", "torchvision", "pillow", "needs"), [
    ("torchvision", False, True, "the torchvision decoder needs torchvision"),
    ("nvjpeg", False, True, "the nvjpeg decoder needs torchvision"),
    ("auto", False, False, "reading image folders needs torchvision or Pillow"),
], ids=["torchvision", "nvjpeg", "neither"])
def test_missing_decoder_names_the_extra(monkeypatch: pytest.MonkeyPatch, decoder: str, torchvision: bool,
                                          pillow: bool, needs: str) -> None:
    monkeypatch.setattr(image_files, "has_torchvision", lambda: torchvision)
    monkeypatch.setattr(image_files, "has_pillow", lambda: pillow)
    with pytest.raises(DataError, match=rf"^{needs}: pip install 'resdsl\[images\]'$"):
        image_files.check_decoder(decoder, torch.device("cpu"))


def test_nvjpeg_without_a_gpu_is_refused() -> None:
    with pytest.raises(DataError, match="the nvjpeg decoder decodes on a CUDA GPU"):
        image_files.check_decoder("nvjpeg", torch.device("cpu"))


def test_folder_pixel_mean_is_the_mean_of_the_centre_views(jpeg_folder: Path) -> None:
    data = load_dataset("imagenet", jpeg_folder, train=False).sized(24)
    views = [TF.center_crop(TF.resize(decode(p, read_file(p), "pil"), [27], antialias=True), [24])
             for p in data.images.paths]
    expected = torch.stack(views).double().mean(0) / 255
    assert torch.allclose(pixel_mean(data, workers=0).double(), expected, atol=1e-6)


def test_image_folder_labels_follow_sorted_class_folders(jpeg_folder: Path) -> None:
    data = load_dataset("imagenet", find_data("imagenet", jpeg_folder), train=True)
    assert (len(data), data.classes) == (300, 10)
    assert data.labels.tolist() == [label for label in range(10) for _ in range(30)]
    assert data.images.paths[30].parent.name == "n00000001"


def test_image_folder_without_val_is_refused(make_image_folder: Callable) -> None:
    folder = make_image_folder({"train": 1})
    with pytest.raises(DataError, match="val is missing"):
        load_dataset("imagenet", folder, train=False)


def test_input_watch_says_once_when_the_step_waits_for_data() -> None:
    said: list[str] = []
    watch = InputWatch("raise --workers", skip=2, window=4)
    for _ in range(30):
        watch.record(wait=0.3, step=0.1, images=256, say=said.append)  # data: 256 per 0.4 s; step: 256 per 0.1 s
    assert said == ["input-bound: the data pipeline delivers 640 images/s and the training step takes 2,560 "
                    "images/s, so the step waits 75% of the time; raise --workers"]


def test_input_watch_is_silent_when_the_data_keeps_up() -> None:
    said: list[str] = []
    watch = InputWatch("raise --workers", skip=2, window=4)
    for number in range(30):  # one slow batch is not a trend
        watch.record(wait=0.5 if number == 7 else 0.001, step=0.1, images=256, say=said.append)
    assert said == []


FOLDER_SPEC = """network folder_net {
  input 3x32x32
  stem { conv1: conv 3x3, 8; bn1: batchnorm; relu }
  stages (block: basic, shortcut: A) { layer1: 1 x 8 }
  head { avgpool; fc: linear 10 }
%s}
"""


@pytest.mark.parametrize(("train_section", "says_default"), [
    ("  train {\n    dataset imagefolder\n    batch 8\n    iterations 1\n    augment pad 4, crop 32, flip\n  }\n",
     False),
    ("", True),
], ids=["own train section", "no train section"])
def test_a_padding_augment_for_an_image_folder_blames_the_cifar_recipe_only_without_a_train_section(
        png_folder: Path, tmp_path: Path, train_section: str, says_default: bool) -> None:
    import resdsl
    from resdsl.recipe import recipe_of
    from resdsl.train import RunConfig, run

    network = resdsl.compile(FOLDER_SPEC % train_section)
    recipe = recipe_of(network.program, [("--dataset", 'dataset "imagefolder"'), ("--split", "split 0")])
    with pytest.raises(DataError) as caught:
        run(network, RunConfig(recipe=recipe, out=tmp_path / "run", data=png_folder, device="cpu", workers=0))
    assert "the recipe's augment says pad 4" in str(caught.value)
    assert ("a spec without a train section gets the paper's CIFAR recipe" in str(caught.value)) == says_default
