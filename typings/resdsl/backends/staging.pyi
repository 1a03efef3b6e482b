from backends.staging import *
