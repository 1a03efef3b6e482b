"""ImageNet (ILSVRC2012): an image folder of 1,000 classes named by WordNet id."""

from resdsl.data.datasets.imagefolder import load
from resdsl.data.record import DatasetRecord

RECORD = DatasetRecord(
    name="imagenet", files="train/<wnid>/*.JPEG and val/<wnid>/*.JPEG", markers=("train",), subdirs=("",),
    source="unpack ILSVRC2012 into one of them, its validation images sorted into one folder per class",
    load=load, classes=None, image_shape=None)
