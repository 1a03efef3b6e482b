# Makes typestubs/resdsl a package, so that basedpyright takes resdsl.backends from here; a .py, not a .pyi,
# so that it never wins over resdsl/__init__.py itself (the checker prefers a stub to a source file). See
# [tool.basedpyright] in pyproject.toml.
