"""The data-set readers, one family per module: each ``read_*(root, download, **options)`` returns a RawData with
both splits, and imports its optional packages (scikit-learn, mnist1d, torchvision) only when it runs."""

from hardbatch.data.readers.cifar import read_cifar10, read_cifar100
from hardbatch.data.readers.common import RawData
from hardbatch.data.readers.digits import read_digits
from hardbatch.data.readers.fashion_mnist import read_fashion_mnist
from hardbatch.data.readers.imagefolder import read_imagefolder
from hardbatch.data.readers.mnist1d import read_mnist1d
from hardbatch.data.readers.stl10 import read_stl10

__all__ = [
    "RawData",
    "read_cifar10",
    "read_cifar100",
    "read_digits",
    "read_fashion_mnist",
    "read_imagefolder",
    "read_mnist1d",
    "read_stl10",
]
