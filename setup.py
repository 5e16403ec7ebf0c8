"""The one compiled part: the replay's event reader (projections/_eventreader.c).

Everything else is declared in pyproject.toml. The extension is optional at run time:
without it, projections.decode falls back to its pure-Python reader (slower, same rows).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("projections._eventreader", ["projections/_eventreader.c"],
                             extra_compile_args=["-O2", "-std=c99", "-Wall", "-Wextra"],
                             optional=True)])
