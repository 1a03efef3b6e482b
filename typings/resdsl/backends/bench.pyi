from backends.bench import *
