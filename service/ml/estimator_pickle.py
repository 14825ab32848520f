"""Runner-trained ``model.pkl`` files, unpickled with an allowlist instead of trust.

Runners are untrusted compute: a runner (or the user code it runs) could write
any bytes to ``model.pkl``, and a plain ``pickle.loads`` of them runs whatever
callable they name. The digest check only proves the bytes are the ones the
run recorded, not that they are harmless. So the service unpickles them with
:class:`EstimatorUnpickler`, which builds only:

- classes defined by scikit-learn and NumPy (``numpy.memmap`` and the modules
  that touch files or compile code excluded; a class of another library that a
  scikit-learn module merely imports, such as ``functools.partial``,
  ``pathlib.Path`` or ``threading.Thread``, is refused), and a few builtins (``slice``, ``set``,
  ``frozenset``, ``complex``, ``bytearray``, ``object``);
- the reconstruction functions pickles of those need (NumPy's array, scalar and
  random-generator constructors, Cython's ``__pyx_unpickle_*``, scikit-learn's
  ``newObj`` of its neighbour trees, ``copyreg._reconstructor``).

Any other global (``os.system``, ``builtins.eval``, a function of any other
library) refuses the file. Constructing an allowed class runs only its own
constructor; a loaded estimator's trees are then checked like a skops
file's (:func:`service.ml.skops_trust.check_loaded_trees`). This narrows what a
hostile pickle can do; it does not make pickle a safe format (scikit-learn's
own C code trusts other arrays too, e.g. its neighbour trees). The sklearn
kind's models are the runner's pickles; models trained elsewhere are served
from skops or ONNX only (:mod:`service.ml.safe_formats`).
"""

from __future__ import annotations

import io
import pickle
from typing import Any

from service.ml.unsupported import UnsupportedModel

_ROOTS = frozenset({"sklearn", "numpy"})
_EXCLUDED_MODULES = (
    "numpy.testing",
    "numpy.f2py",
    "numpy.distutils",
    "numpy.ctypeslib",
    "numpy.lib._datasource",
    "numpy.lib.npyio",
    "numpy._core.memmap",
    "numpy.core.memmap",
    "sklearn.datasets",
    "sklearn.utils._testing",
    "sklearn.externals",
)
_BUILTINS = frozenset({"slice", "set", "frozenset", "complex", "bytearray", "object"})
_FUNCTIONS = frozenset(
    {
        ("copyreg", "_reconstructor"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy.random._pickle", "__randomstate_ctor"),
        ("numpy.random._pickle", "__generator_ctor"),
        ("numpy.random._pickle", "__bit_generator_ctor"),
    }
)


class EstimatorUnpickler(pickle.Unpickler):
    """Unpickles scikit-learn estimators and NumPy data, and refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        """The global, if the allowlist admits it (see the module docstring)."""
        if (module == "builtins" and name in _BUILTINS) or (module, name) in _FUNCTIONS:
            return super().find_class(module, name)
        root = module.split(".")[0]
        excluded = any(module == m or module.startswith(m + ".") for m in _EXCLUDED_MODULES)
        if root in _ROOTS and not excluded and "." not in name:
            found = super().find_class(module, name)
            defined_in = str(getattr(found, "__module__", "") or "").split(".")[0]
            if defined_in not in _ROOTS:  # re-exported from elsewhere: functools.partial, pathlib.Path, Thread...
                raise pickle.UnpicklingError(f"{module}.{name} is not a scikit-learn or NumPy type the service builds")
            if isinstance(found, type) and not (root == "numpy" and name == "memmap"):
                return found
            if name.startswith("__pyx_unpickle_") or (root == "sklearn" and name == "newObj"):
                return found
        raise pickle.UnpicklingError(f"{module}.{name} is not a scikit-learn or NumPy type the service builds")


def load_estimator_pickle(data: bytes, name: str) -> Any:
    """The object pickled in ``data``, built by :class:`EstimatorUnpickler`, its trees checked."""
    from service.ml.skops_trust import check_loaded_trees

    try:
        model = EstimatorUnpickler(io.BytesIO(data)).load()
    except pickle.UnpicklingError as exc:
        raise UnsupportedModel(f"{name} is refused: {exc}") from None
    except Exception as exc:
        raise UnsupportedModel(f"{name} is not a readable pickled model: {exc}") from None
    check_loaded_trees(model)
    return model
