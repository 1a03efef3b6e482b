from backends.preprocess import *
