from backends.tensorrt import *
