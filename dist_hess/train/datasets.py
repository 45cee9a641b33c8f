"""Real data sets that ship with scikit-learn, ready for `dist_hess.fit` (no download).

``load_dataset("sklearn:NAME")`` returns ``(X, Y)`` with ``X`` standardised column by
column (mean 0, population standard deviation 1; constant columns, e.g. the blank
border pixels of ``digits``, become 0):

==================  ========  ===========  =======================================
name                examples  inputs       targets ``Y``
==================  ========  ===========  =======================================
``diabetes``        442       10           disease progression, standardised (float)
``breast_cancer``   569       30           malignant 0 / benign 1 (float, for
                                           ``binary_cross_entropy``)
``digits``          1797      64           class 0..9 (int, ``softmax_cross_entropy``)
``iris``            150       4            class 0..2 (int)
``wine``            178       13           class 0..2 (int)
==================  ========  ===========  =======================================

Any other ``DATA`` string goes to `dist_hess.cli.load_data` (``.npz``, ``.csv``,
zarr group).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["PREFIX", "SKLEARN_DATASETS", "DatasetInfo", "is_sklearn_name", "load_sklearn",
           "load_dataset"]

PREFIX = "sklearn:"


@dataclass(frozen=True)
class DatasetInfo:
    """What a bundled data set is: its scikit-learn loader, task and loss to use."""

    loader: str
    task: str                  # regression | binary | multiclass
    loss: str

    @property
    def standardise_y(self) -> bool:
        return self.task == "regression"


SKLEARN_DATASETS = {
    "diabetes": DatasetInfo("load_diabetes", "regression", "squared"),
    "breast_cancer": DatasetInfo("load_breast_cancer", "binary", "binary_cross_entropy"),
    "digits": DatasetInfo("load_digits", "multiclass", "softmax_cross_entropy"),
    "iris": DatasetInfo("load_iris", "multiclass", "softmax_cross_entropy"),
    "wine": DatasetInfo("load_wine", "multiclass", "softmax_cross_entropy"),
}


def is_sklearn_name(data) -> bool:
    """Whether ``data`` names a bundled data set (``"sklearn:NAME"``)."""
    return isinstance(data, str) and data.startswith(PREFIX)


def _standardise(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    centred = a - a.mean(axis=0)
    scale = a.std(axis=0)
    return centred / np.where(scale > 0, scale, 1.0)


def load_sklearn(name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(X, Y)`` of a scikit-learn bundled data set, ``X`` standardised (see the module).

    ``name`` is ``diabetes``, ``breast_cancer``, ``digits``, ``iris`` or ``wine``, with or
    without the ``sklearn:`` prefix.
    """
    import sklearn.datasets

    key = name[len(PREFIX):] if name.startswith(PREFIX) else name
    try:
        info = SKLEARN_DATASETS[key]
    except KeyError:
        known = ", ".join(PREFIX + k for k in SKLEARN_DATASETS)
        raise ValueError(f"unknown bundled data set {name!r}; known: {known}") from None
    X, y = getattr(sklearn.datasets, info.loader)(return_X_y=True)
    X = _standardise(X)
    if info.standardise_y:
        Y = _standardise(y)
    elif info.task == "binary":
        Y = np.asarray(y, dtype=np.float64)
    else:
        Y = np.asarray(y, dtype=np.int64)
    return X, Y


def load_dataset(data: str, target: list[str] | None = None):
    """``(X, Y)`` from ``sklearn:NAME`` or from a file or zarr group (`dist_hess.cli.load_data`)."""
    if is_sklearn_name(data):
        return load_sklearn(data)
    from dist_hess.cli import load_data
    return load_data(data, target)
