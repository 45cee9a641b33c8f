"""Examples ``(X, Y)`` from files and from the data sets that ship with scikit-learn.

Used by the ``dist-hess`` command line (every ``DATA`` argument) and by Python code::

    from dist_hess.datasets import load_data, load_sklearn
    X, Y = load_sklearn("diabetes")
    X, Y = load_data("houses.csv", target=["price"])

`load_data` reads

- ``sklearn:NAME``: a data set bundled with scikit-learn (no download), `load_sklearn`;
- ``.npz``: arrays ``X`` and ``Y``;
- ``.csv``: a header row; ``target`` names the ``Y`` column(s), the others are ``X``;
- a zarr group directory with arrays ``X`` and ``Y`` (returned as zarr arrays, read
  lazily, chunk by chunk, by whoever computes on them).

`load_inputs` reads the inputs ``X`` alone (for predictions: no target needed; also
``.npy``).

The bundled sets come with ``X`` standardised column by column (mean 0, population
standard deviation 1; constant columns, e.g. the blank border pixels of ``digits``,
become 0):

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

Errors in the data (a missing array or column, a non-numeric value, an unknown
format) raise ``ValueError`` naming the file.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass

import numpy as np

__all__ = ["PREFIX", "SKLEARN_DATASETS", "DatasetInfo", "is_sklearn_name", "load_sklearn",
           "load_data", "load_inputs", "data_names", "integer_labels"]

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


def _dataset_info(name: str) -> DatasetInfo:
    key = name[len(PREFIX):] if name.startswith(PREFIX) else name
    try:
        return SKLEARN_DATASETS[key]
    except KeyError:
        known = ", ".join(PREFIX + k for k in SKLEARN_DATASETS)
        raise ValueError(f"unknown bundled data set {name!r}; known: {known}") from None


def load_sklearn(name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(X, Y)`` of a scikit-learn bundled data set, ``X`` standardised (see the module).

    ``name`` is ``diabetes``, ``breast_cancer``, ``digits``, ``iris`` or ``wine``, with or
    without the ``sklearn:`` prefix.
    """
    # Imported on use: scikit-learn takes about a second to import, which files and the
    # command line's --help should not pay.
    import sklearn.datasets

    info = _dataset_info(name)
    X, y = getattr(sklearn.datasets, info.loader)(return_X_y=True)
    X = _standardise(X)
    if info.standardise_y:
        Y = _standardise(y)
    elif info.task == "binary":
        Y = np.asarray(y, dtype=np.float64)
    else:
        Y = np.asarray(y, dtype=np.int64)
    return X, Y


def _read_csv(path: str, target: list[str]):
    """``(header, table)``: the CSV's column names and its values, ``(n, columns)``."""
    with open(path, newline="") as f:
        header = [name.strip() for name in next(csv.reader(f))]
    missing = [t for t in target if t not in header]
    if missing:
        raise ValueError(f"{path}: no column(s) {missing} in the header {header}")
    try:
        table = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2, dtype=np.float64)
    except ValueError as err:
        raise ValueError(f"{path}: every value after the header row must be a number "
                         f"({err})") from None
    if table.shape[1] != len(header):
        raise ValueError(f"{path}: the header has {len(header)} columns, the rows "
                         f"{table.shape[1]}")
    return header, table


def _load_csv(path: str, target: list[str] | None):
    if not target:
        raise ValueError(f"{path}: a CSV file needs --target naming the target column(s)")
    header, table = _read_csv(path, target)
    y_cols = [header.index(t) for t in target]
    x_cols = [i for i in range(len(header)) if i not in y_cols]
    Y = table[:, y_cols]
    return table[:, x_cols], (Y[:, 0] if Y.shape[1] == 1 else Y)


def _load_npz(path: str, names: tuple[str, ...]) -> tuple:
    with np.load(path) as data:
        if any(name not in data.files for name in names):
            raise ValueError(f"{path}: needs arrays {' and '.join(names)}, found "
                             f"{sorted(data.files)}")
        return tuple(data[name] for name in names)


def _load_zarr(path: str, names: tuple[str, ...]) -> tuple:
    # Imported on use: zarr is needed only for zarr data, and an in-process fit on
    # in-memory data must not import it.
    import zarr

    try:
        group = zarr.open_group(path, mode="r")
    except Exception as err:  # noqa: BLE001 -- report any unreadable directory the same way
        raise ValueError(f"{path}: not a zarr group ({err})") from None
    missing = [name for name in names if name not in group]
    if missing:
        raise ValueError(f"{path}: the zarr group needs arrays {' and '.join(names)} "
                         f"(missing {missing})")
    return tuple(group[name] for name in names)


def load_data(path: str, target: list[str] | None = None):
    """``(X, Y)`` from ``sklearn:NAME``, a ``.npz`` file (arrays X, Y), a ``.csv`` file
    (header row; ``target`` names the Y columns, the rest are X) or a zarr group (arrays
    X, Y, read lazily); see the module docstring."""
    if is_sklearn_name(path):
        return load_sklearn(path)
    if path.endswith(".npz"):
        return _load_npz(path, ("X", "Y"))
    if path.endswith(".csv"):
        return _load_csv(path, target)
    if os.path.isdir(path):
        return _load_zarr(path, ("X", "Y"))
    raise ValueError(f"{path}: unknown data format; expected sklearn:NAME, a .npz file, "
                     f"a .csv file or a zarr group directory")


def load_inputs(path: str, drop: list[str] | None = None) -> np.ndarray:
    """The inputs ``X`` alone, for predictions: from ``sklearn:NAME`` (its ``X``), a
    ``.npy`` file (the array), a ``.npz`` file (array ``X``; ``Y`` may be absent), a
    ``.csv`` file (every column but the ``drop`` columns, e.g. a target kept in the
    file) or a zarr group (array ``X``, read whole)."""
    drop = list(drop or [])
    if is_sklearn_name(path):
        return load_sklearn(path)[0]
    if path.endswith(".npy"):
        return np.load(path)
    if path.endswith(".npz"):
        return _load_npz(path, ("X",))[0]
    if path.endswith(".csv"):
        header, table = _read_csv(path, drop)
        return table[:, [i for i, name in enumerate(header) if name not in drop]]
    if os.path.isdir(path):
        return _load_zarr(path, ("X",))[0][...]
    raise ValueError(f"{path}: unknown data format; expected sklearn:NAME, a .npy, .npz or "
                     f".csv file or a zarr group directory")


def _sklearn_names(name: str) -> tuple[list[str], list[str] | None]:
    import sklearn.datasets

    info = _dataset_info(name)
    bunch = getattr(sklearn.datasets, info.loader)()
    inputs = [str(f) for f in bunch.feature_names]
    classes = getattr(bunch, "target_names", None)
    return inputs, (None if classes is None else [str(c) for c in classes])


def data_names(path: str, target: list[str] | None = None) -> tuple[list[str] | None,
                                                                   list[str] | None]:
    """``(input_names, output_names)`` of the data ``path`` names, ``None`` where it has none.

    A CSV file: its header (the ``target`` columns are the outputs, in that order); a
    bundled data set: scikit-learn's ``feature_names`` and, for classes, ``target_names``
    (diabetes' inputs read ``age, sex, bmi, bp, s1..s6``). ``.npz`` files and zarr groups
    carry no names. The model JSON's ``input_names`` / ``output_names`` (DESIGN §1) take
    them (``Model.with_names``).
    """
    if is_sklearn_name(path):
        return _sklearn_names(path)
    if path.endswith(".csv"):
        with open(path, newline="") as f:
            header = [name.strip() for name in next(csv.reader(f), [])]
        target = list(target or [])
        return [h for h in header if h not in target] or None, target or None
    return None, None


def integer_labels(model, Y):
    """``Y`` as integer class labels when ``model``'s loss is softmax cross-entropy and
    ``Y`` a vector of whole numbers (CSV values are read as floats); otherwise ``Y``."""
    if model.loss.name == "softmax_cross_entropy" and isinstance(Y, np.ndarray) and Y.ndim == 1:
        if not np.all(Y == np.round(Y)):
            raise ValueError("softmax_cross_entropy targets must be integer class labels")
        return Y.astype(np.int64)
    return Y
