from backends.export import *
