from backends.openvino import *
