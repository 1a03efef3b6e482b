from backends.artifact import *
