# Makes typestubs/resdsl a package, so that basedpyright finds resdsl.backends through the link beside this file;
# a .py, not a .pyi, so that it never wins over resdsl/__init__.py itself (the checker prefers a stub to a source
# file). See [tool.basedpyright] in pyproject.toml.
