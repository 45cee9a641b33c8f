"""Names of parameters and the groups a joint Wald test takes.

Units are named ``L{k}.{j}`` (unit ``j`` of layer ``k``, both as stored: ``j``
from 0) and inputs ``x{i}``, or by the model's optional names (DESIGN §1):
``input_names`` replace ``x{i}`` (``L1.3 <- bmi``), ``output_names`` name the
last layer's units (``L2.setosa <- L1.0``).  A parameter's name says which unit it
belongs to and what it multiplies, as its propagation labels its row
(``Propagation.column_labels``): ``L1.0 <- x2`` (dense weight from input 2),
``L2.0 <- L1.3``, ``L1.0 <- bias``; rbf rows ``L1.0 mu(x2)``, ``L1.0 beta``,
``L1.0 beta(x2)``, ``L1.0 L[1,0]``; quadratic rows ``L1.0 x0*x2``, ``L1.0 x1^2``,
``L1.0 1`` (the constant).

Groups (flat index arrays, pruned entries kept; the tests drop them):

* :func:`input_group`: every parameter that multiplies input ``i`` (``input:I`` or
  ``input:NAME``; dense weights from ``x_i``, quadratic monomials containing
  ``x_i``: the propagation's ``input_columns``), in every layer that reads the
  input.  "Input i is irrelevant" is the hypothesis
  that they are all zero.
* :func:`unit_group`: the incoming row of unit ``j`` of layer ``k`` and, with
  ``outgoing=True``, the dense weights that read it.
* :func:`layer_group`: every parameter of layer ``k``.

:func:`parse_group` reads the text forms ``input:I``, ``unit:K:J``,
``unit:K:J:out``, ``layer:K`` (what the command line takes).
"""
from __future__ import annotations

import difflib
import numbers

import numpy as np

from ..engine.forward import source_offsets

__all__ = ["unit_label", "parameter_name", "parameter_names", "column_labels", "input_group",
           "unit_group", "layer_group", "parse_group", "select_parameters"]


def unit_label(model, k: int, j: int) -> str:
    """Unit ``j`` of layer ``k``: ``x{j}`` or the input's name (``k = 0``), ``L{k}.{j}``,
    the output's name for the last layer, ``L{m}.{name}``, when the model has
    ``output_names`` (for one logit unit with two class names: the second class's)."""
    if k == 0:
        return f"x{j}" if model.input_names is None else model.input_names[j]
    if k == len(model.layers) and model.output_names is not None:
        names = model.output_names
        return f"L{k}.{names[j + len(names) - model.sizes[-1]]}"
    return f"L{k}.{j}"


def _input_labels(model, k):
    """Labels of the layer's inputs ``u`` (its sources concatenated)."""
    labels = []
    for p, sl in source_offsets(model, k):
        labels += [unit_label(model, p, i) for i in range(sl.stop - sl.start)]
    return labels


def column_labels(model, k) -> list[str]:
    """What each of the ``d_k`` row parameters of layer ``k`` is, in row order."""
    return model.layers[k - 1].propagation.column_labels(_input_labels(model, k))


def parameter_name(model, q) -> str:
    k, j, c = model.layer_of(int(q))
    label = column_labels(model, k)[c]
    return f"{unit_label(model, k, j)} {label}"


def parameter_names(model) -> list[str]:
    names = []
    for k, (s, d) in enumerate(model.layer_shapes, start=1):
        labels = column_labels(model, k)
        names += [f"{unit_label(model, k, j)} {labels[c]}" for j in range(s) for c in range(d)]
    return names


def _flat(model, k, j, c):
    sl = model.layer_slices[k - 1]
    d = model.layer_shapes[k - 1][1]
    return sl.start + j * d + c


def _columns_reading(model, k, p, i) -> list[int]:
    """Row columns of layer ``k`` that multiply output ``i`` of its source ``p``."""
    prop = model.layers[k - 1].propagation
    offsets = dict(source_offsets(model, k))
    if p not in offsets:
        return []
    columns = prop.input_columns(offsets[p].start + i)        # position in u
    if columns is not None:
        return columns
    raise ValueError(f"layer {k} ({prop.type}) does not read its inputs through weights that can "
                     f"be zero, so 'input/unit is irrelevant' is no zero-weight hypothesis there; "
                     f"test a list of parameter indices instead")


def input_group(model, i: int) -> np.ndarray:
    """Flat indices of every parameter that multiplies input ``x_i``."""
    if not 0 <= i < model.inputs:
        raise ValueError(f"input {i} out of range 0..{model.inputs - 1}")
    out = []
    for k, layer in enumerate(model.layers, start=1):
        if 0 not in layer.sources:
            continue
        s = layer.units
        for c in _columns_reading(model, k, 0, i):
            out += [_flat(model, k, j, c) for j in range(s)]
    return np.array(sorted(out), dtype=int)


def unit_group(model, k: int, j: int, outgoing: bool = False) -> np.ndarray:
    """Unit ``j`` of layer ``k``: its row, and with ``outgoing`` the weights reading it."""
    if not 1 <= k <= len(model.layers):
        raise ValueError(f"layer {k} out of range 1..{len(model.layers)}")
    s, d = model.layer_shapes[k - 1]
    if not 0 <= j < s:
        raise ValueError(f"unit {j} out of range 0..{s - 1} for layer {k}")
    out = [_flat(model, k, j, c) for c in range(d)]
    if outgoing:
        for k2, layer in enumerate(model.layers, start=1):
            if k in layer.sources:
                for c in _columns_reading(model, k2, k, j):
                    out += [_flat(model, k2, j2, c) for j2 in range(layer.units)]
    return np.array(sorted(out), dtype=int)


def layer_group(model, k: int) -> np.ndarray:
    if not 1 <= k <= len(model.layers):
        raise ValueError(f"layer {k} out of range 1..{len(model.layers)}")
    sl = model.layer_slices[k - 1]
    return np.arange(sl.start, sl.stop)


def parse_group(model, group) -> tuple[str, np.ndarray]:
    """``(name, indices)`` from a text form (see the module docstring) or an index sequence."""
    if isinstance(group, str):
        parts = group.split(":")
        names = model.input_names or ()
        if parts[0] == "input" and len(parts) == 2 and parts[1] in names:
            i = names.index(parts[1])
            return f"input {parts[1]}", input_group(model, i)
        try:
            what, numbers = parts[0], [int(x) for x in parts[1:] if x != "out"]
        except ValueError:
            raise ValueError(f"cannot read group {group!r}: use input:I, unit:K:J, unit:K:J:out "
                             f"or layer:K") from None
        if what == "input" and len(numbers) == 1:
            label = unit_label(model, 0, numbers[0]) if 0 <= numbers[0] < model.inputs else numbers[0]
            return f"input {label}", input_group(model, numbers[0])
        if what == "unit" and len(numbers) == 2:
            out = parts[-1] == "out"
            name = f"unit L{numbers[0]}.{numbers[1]}" + (" (in and out)" if out else "")
            return name, unit_group(model, numbers[0], numbers[1], outgoing=out)
        if what == "layer" and len(numbers) == 1:
            return f"layer {numbers[0]}", layer_group(model, numbers[0])
        raise ValueError(f"cannot read group {group!r}: use input:I, unit:K:J, unit:K:J:out "
                         f"or layer:K")
    index = np.unique(np.asarray(group, dtype=int).ravel())
    if index.size == 0:
        raise ValueError("the group is empty")
    if index.min() < 0 or index.max() >= model.n_params:
        raise ValueError(f"group indices must lie in 0..{model.n_params - 1}")
    return f"{index.size} parameters", index


def select_parameters(model, parameters) -> np.ndarray:
    """Sorted unique flat indices from a parameter selection (``wald_table(parameters=...)``).

    ``parameters``: a flat index, a parameter name (``"L1.3 <- x2"``, as in the tables), a
    group in the text forms of :func:`parse_group` (``"layer:K"``, ``"unit:K:J"``,
    ``"unit:K:J:out"``, ``"input:I"``), a ``(t,)`` boolean mask, or a sequence mixing
    indices, names and groups.
    """
    if isinstance(parameters, np.ndarray) and parameters.dtype == bool:
        if parameters.shape != (model.n_params,):
            raise ValueError(f"a boolean parameter mask must have shape ({model.n_params},), "
                             f"got {parameters.shape}")
        items = list(np.flatnonzero(parameters))
    elif isinstance(parameters, (str, numbers.Integral)):
        items = [parameters]
    else:
        try:
            items = list(parameters)
        except TypeError:
            raise TypeError(f"parameters must be indices, names or groups such as 'layer:1', "
                            f"got {parameters!r}") from None
    names = None
    out = []
    for item in items:
        if isinstance(item, (bool, np.bool_)):
            raise TypeError(f"parameters: {item!r} is a boolean; pass a (t,) boolean mask "
                            f"or indices")
        if isinstance(item, numbers.Integral):
            if not 0 <= int(item) < model.n_params:
                raise ValueError(f"parameter index {item} out of range 0..{model.n_params - 1}")
            out.append(int(item))
        elif isinstance(item, str):
            names = parameter_names(model) if names is None else names
            if item in names:
                out.append(names.index(item))
            elif ":" in item:
                out += [int(q) for q in parse_group(model, item)[1]]
            else:
                close = difflib.get_close_matches(item, names, n=3)
                raise ValueError(f"no parameter named {item!r}"
                                 + (f"; did you mean {close}?" if close else "")
                                 + " (names as in the Wald table, or a group such as "
                                   "'layer:1', 'unit:1:0', 'input:0')")
        else:
            raise TypeError(f"parameters: cannot read {item!r} ({type(item).__name__}); use "
                            f"indices, names or groups such as 'layer:1'")
    if not out:
        raise ValueError("parameters selects no parameter")
    return np.unique(np.array(out, dtype=int))
