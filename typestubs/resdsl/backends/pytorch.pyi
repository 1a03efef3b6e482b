from backends.pytorch import *
