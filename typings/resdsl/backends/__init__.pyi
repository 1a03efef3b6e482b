from backends import *
