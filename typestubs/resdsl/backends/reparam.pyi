from backends.reparam import *
