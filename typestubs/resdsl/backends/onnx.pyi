from backends.onnx import *
