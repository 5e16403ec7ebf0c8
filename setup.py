"""The one compiled part: the replay's event reader (ledger/wire/_eventreader.c).

Everything else is declared in pyproject.toml. The extension is optional at run time:
without it, ledger.wire.event's pure-Python reader does the work (slower, same rows).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("ledger.wire._eventreader", ["ledger/wire/_eventreader.c"],
                             extra_compile_args=["-O2", "-std=c99", "-Wall", "-Wextra"],
                             optional=True)])
