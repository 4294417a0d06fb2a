"""What the fork server imports and runs once before it forks (`warm_up`), so that every session
finds it ready, shared copy-on-write.
"""

from __future__ import annotations

WARM_MODULES = (
    "math",
    "cmath",
    "itertools",
    "functools",
    "fractions",
    "decimal",
    "collections",
    "heapq",
    "bisect",
    "random",
    "re",
    "string",
    "statistics",
    "operator",
    "numbers",
    "typing",
    "dataclasses",
    "json",
    "time",
    "datetime",
    "copy",
    "array",
    "struct",
    "numpy",
    "numpy.random",
    "numpy.linalg",
    "numpy.polynomial",
    "mpmath",
    "sympy",
    "sympy.ntheory",
    "sympy.combinatorics",
    "sympy.solvers.diophantine",
)


def warm_up(notes):
    """Import WARM_MODULES and fill their lazy imports and caches (run by the fork server before
    it forks, so that every session finds them ready, shared copy-on-write). What fails is
    written to `notes`."""
    import importlib

    for name in WARM_MODULES:
        try:
            importlib.import_module(name)
        except Exception as e:  # a missing optional module is not fatal
            notes[f"import {name}"] = repr(e)
    try:  # populate lazy imports and caches once
        import sympy

        x = sympy.Symbol("x")
        sympy.divisors(360), sympy.factorint(2**20 - 1), sympy.isprime(97), sympy.nextprime(100)
        sympy.solve(x**2 - 2, x), sympy.simplify(sympy.sin(x) ** 2 + sympy.cos(x) ** 2)
        sympy.Rational(1, 3) + sympy.sqrt(2), sympy.binomial(10, 3), sympy.expand((x + 1) ** 3)
        sympy.factor(x**2 - 1), sympy.summation(x, (x, 1, 10)), sympy.Matrix([[1, 2], [3, 4]]).det()
        sympy.N(sympy.pi, 30), sympy.totient(36), sympy.gcd(12, 18), sympy.mod_inverse(3, 7)
        import numpy

        numpy.arange(10).sum(), numpy.linalg.det(numpy.eye(2))
        import mpmath

        mpmath.mpf(2).sqrt()
    except Exception as e:
        notes["warm-up"] = repr(e)
    for name in ("ast", "linecache", "traceback", "resource", "types", "codecs", "io", "shutil"):
        importlib.import_module(name)  # what the session worker itself uses
