from backends.torchscript import *
