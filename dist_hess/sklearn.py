"""scikit-learn estimators on dist_hess, and :func:`from_sklearn` (DESIGN §3 *contract*).

``MLPRegressor`` and ``MLPClassifier`` fit a dense network (``hidden_layer_sizes``,
one ``activation`` for every hidden layer, ``skip``: every layer after the first also
reads the input layer 0) with `dist_hess.fit` and expose the fit the scikit-learn
way (``fit``, ``predict``, ``predict_proba``, ``score``, ``get_params``...) plus the
exact second-order quantities: ``hessian_``, :meth:`wald_table`, :meth:`summary`.
``import dist_hess`` does not import this module (nor scikit-learn).

The objective
-------------
With ``n`` examples and ``W`` the non-bias weights (every weight but the bias
column of each dense layer)::

    E(w) = sum_i g(x^m_i, y_i) + alpha/2 * ||W||^2

``g``: ``squared`` ``1/2 ||y_i - x^m_i||^2`` (regressor, any number of outputs);
``binary_cross_entropy`` on one logit (two classes); ``softmax_cross_entropy`` on
``C`` logits (``C > 2`` classes). Sums over examples, not means (DESIGN §1).

Relation to scikit-learn's ``alpha``. scikit-learn's MLP
(``sklearn/neural_network/_multilayer_perceptron.py``, ``_backprop``) computes,
for every loss, the gradient ``(1/n) [sum_i dg_i/dw + alpha W]``: the gradient of
``E(w)/n`` with our ``alpha`` equal to its ``alpha``. So the conversion is the
identity, ``alpha_dist_hess = alpha_sklearn``; the two objectives have the same
minimisers and ``grad E = n * grad J_sklearn`` (``tests/test_sklearn.py`` checks
both against ``_backprop``). scikit-learn's reported *value* (``loss_``,
``loss_curve_``) is ``E/n`` for log-loss and single-output regression; for a
regressor with ``c > 1`` outputs its ``squared_error`` value also averages over
outputs, ``(sum_i g_i / c + alpha/2 ||W||^2) / n``, which is not the function its
gradient differentiates (the gradient sums over outputs); the weights it trains to
are stationary points of ``E`` with ``alpha`` unchanged all the same.

Inputs are used as given: the estimators do *not* standardise ``X`` (put a
``StandardScaler`` in front, in a ``Pipeline``). Regression targets are not
scaled either: the squared loss, ``alpha`` and the standard errors are on the
scale of ``y``.

Not like scikit-learn's MLP: the default activation is ``tanh`` (smooth, so the
Hessian is informative; ``relu`` is accepted and has zero second derivative almost
everywhere), the default network is small (``(10,)``) because the methods are
Newton-type on the exact curvature, and ``tol`` is a bound on the gradient norm
``||grad E||`` of the summed objective. ``loss_`` is ``E`` at ``coef_`` (the sum,
not scikit-learn's mean). Activation names are dist_hess's (``identity``,
``tanh``, ``logistic``, ``softplus``, ``gaussian``, ``relu``, ``sin``), which
include scikit-learn's four under the same names and meaning.

Estimator checks
----------------
Both estimators pass every check of ``sklearn.utils.estimator_checks.check_estimator``
(scikit-learn 1.9; ``tests/test_sklearn.py`` runs each one with
``parametrize_with_checks``): :data:`EXPECTED_FAILED_CHECKS`, the checks declared to
scikit-learn as expected to fail (``expected_failed_checks``, with the reason), is
empty. scikit-learn itself skips ``check_array_api_input`` unless the environment
sets ``SCIPY_ARRAY_API=1`` (with it set, the check passes on numpy input; the
estimators do not declare Array API support: the fit runs in numpy).
"""
from __future__ import annotations

import numbers
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

import dist_hess as dh

from .analysis import wald_table as _wald_table

__all__ = ["MLPRegressor", "MLPClassifier", "from_sklearn", "HESSIAN_MAX_PARAMS",
           "EXPECTED_FAILED_CHECKS"]

#: ``hessian_`` is the exact full Hessian when the network has at most this many
#: parameters (an 8 MB float64 matrix), else ``None``.
HESSIAN_MAX_PARAMS = 1000

#: ``{check name: why it cannot apply}`` for scikit-learn's estimator checks that
#: these estimators are expected to fail (none; see the module docstring).
EXPECTED_FAILED_CHECKS: dict[str, str] = {}


def _hidden_sizes(hidden_layer_sizes) -> list[int]:
    """``hidden_layer_sizes`` as a list of positive ints (``()`` means no hidden layer)."""
    sizes = ([hidden_layer_sizes] if isinstance(hidden_layer_sizes, numbers.Integral)
             else hidden_layer_sizes)
    try:
        sizes = list(sizes)
    except TypeError:
        sizes = None
    if sizes is None or any(isinstance(h, bool) or not isinstance(h, numbers.Integral) or h < 1
                            for h in sizes):
        raise ValueError(f"hidden_layer_sizes must be a positive integer or a sequence of "
                         f"positive integers, got {hidden_layer_sizes!r}")
    return [int(h) for h in sizes]


def _with_names(spec: dict, input_names, output_names) -> dict:
    """``spec`` with the model JSON's optional ``input_names`` / ``output_names`` (DESIGN §1)
    set from the estimator's ``feature_names_in_`` (DataFrame columns) and ``classes_``
    (as strings; for two classes the one logit unit is the second class's), when given."""
    spec = dict(spec)
    if input_names is not None:
        spec["input_names"] = [str(name) for name in input_names]
    if output_names is not None:
        spec["output_names"] = [str(name) for name in output_names]
    return spec


class _DistHessMLP(BaseEstimator):
    """What the regressor and the classifier share: parameters, the network, the fit.

    A subclass gives ``_validate_targets(X, y) -> (X, Y, loss, n_outputs)`` (``Y`` as
    `dist_hess.Model` reads it) and ``_encode_targets(y)`` (the same for new ``y``).
    """

    def __init__(self, hidden_layer_sizes=(10,), activation="tanh", *, alpha=0.0001,
                 skip=False, method=None, starts=None, max_iter=500, tol=1e-6,
                 random_state=None, client=None):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.alpha = alpha
        self.skip = skip
        self.method = method
        self.starts = starts
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.client = client

    def __sklearn_clone__(self):
        """A clone as `sklearn.base.clone` makes it (every parameter cloned, nothing
        fitted), except that ``client`` is shared: a live `distributed.Client` cannot be
        deep-copied, and a clone should run where its original runs."""
        params = {name: value if name == "client" else clone(value, safe=False)
                  for name, value in self.get_params(deep=False).items()}
        return type(self)(**params)

    # -- the network ------------------------------------------------------------------
    def _spec(self, n_inputs: int, n_outputs: int, loss: str) -> dict:
        """The model JSON (DESIGN §1): dense layers, identity output, L2 penalty ``alpha``."""
        hidden = _hidden_sizes(self.hidden_layer_sizes)
        alpha = self.alpha
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not alpha >= 0:
            raise ValueError(f"alpha must be a real number >= 0, got {alpha!r}")
        units = hidden + [n_outputs]
        layers = []
        for k, (size, act) in enumerate(zip(units, [self.activation] * len(hidden) + ["identity"]),
                                        start=1):
            sources = [k - 1] + ([0] if self.skip and k > 1 else [])
            layers.append({"type": "dense", "units": size, "activation": act, "sources": sources})
        spec = {"inputs": int(n_inputs), "layers": layers, "loss": loss,
                "penalty": {"type": "l2", "lambda": float(alpha)} if alpha > 0 else None}
        return _with_names(spec, getattr(self, "feature_names_in_", None), self._output_names())

    def _output_names(self):
        return None

    def _start_weights(self, model) -> list[np.ndarray]:
        """``model.init(seed=s)`` for seeds drawn from ``random_state``: one per start."""
        starts = 1 if self.starts is None else self.starts
        if isinstance(starts, bool) or not isinstance(starts, numbers.Integral) or starts < 1:
            raise ValueError(f"starts must be None or an integer >= 1, got {self.starts!r}")
        seeds = check_random_state(self.random_state).randint(np.iinfo(np.int32).max, size=starts)
        return [model.init(seed=int(s)) for s in seeds]

    def _fit_options(self) -> dict:
        options = {"max_iter": self.max_iter, "gtol": self.tol, "client": self.client}
        if self.method is not None:          # None: dist_hess.fit's own default
            options["method"] = self.method
        return options

    # -- fit ------------------------------------------------------------------------
    def fit(self, X, y):
        """Minimise ``E(w)`` (module docstring) on ``(X, y)`` with `dist_hess.fit`.

        ``starts=None``: one start, ``model.init`` seeded from ``random_state``;
        ``starts=k``: ``k`` such starts, keeping the lowest converged ``E``. A fit
        that does not converge (``max_iter`` reached, stalled) warns with
        ``ConvergenceWarning``.
        """
        X, Y, loss, n_outputs = self._validate_targets(X, y)
        model = dh.Model.from_dict(self._spec(X.shape[1], n_outputs, loss))
        starts = self._start_weights(model)
        options = self._fit_options()
        if self.starts is None:
            result = dh.fit(model, X, Y, w0=starts[0], **options)
        else:                                # in parallel on the workers when a client is set
            result = dh.fit(model, X, Y, starts=starts, **options)
        if not result.converged:
            warnings.warn(f"{type(self).__name__}: the fit did not converge ({result.message}); "
                          f"raise max_iter or loosen tol", ConvergenceWarning, stacklevel=2)
        self.model_ = model
        self.coef_ = np.asarray(result.w, dtype=float)
        self.n_iter_ = int(result.n_iter)
        self.loss_ = float(result.value)
        self.fit_result_ = result
        self.n_outputs_ = int(n_outputs)
        self.hessian_ = self._full_hessian(X, Y)
        # kept (not copied) so that summary() / wald_table() work without the data again
        self._X_fit, self._Y_fit = X, Y
        return self

    def _full_hessian(self, X, Y):
        """The exact ``(t, t)`` Hessian of ``E`` at ``coef_`` when ``t <= HESSIAN_MAX_PARAMS``."""
        if self.model_.n_params > HESSIAN_MAX_PARAMS:
            return None
        return dh.evaluate(self.model_, self.coef_, X, Y, curvature="hessian", structure="full",
                           client=self.client).curvature

    def _raw_output(self, X) -> np.ndarray:
        """The network output ``x^m`` ``(n, c)`` (logits for the classifier)."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return self.model_.predict(self.coef_, X, output="raw")

    # -- inference ----------------------------------------------------------------------
    def _analysis_data(self, X, y):
        if X is None and y is None:
            return self._X_fit, self._Y_fit
        if X is None or y is None:
            raise ValueError("give both X and y (other data than the training data) or neither "
                             "(the training data)")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return X, self._encode_targets(y)

    def wald_table(self, X=None, y=None, **options):
        """`dist_hess.analysis.wald_table` of the fitted network (exact full covariance by
        default) on the training data, or on ``(X, y)``; ``options`` go to it
        (``covariance``, ``structure``, ...; ``client`` defaults to the estimator's)."""
        check_is_fitted(self)
        X, Y = self._analysis_data(X, y)
        options.setdefault("client", self.client)
        return _wald_table((self.model_, self.coef_, X, Y), **options)

    def summary(self, X=None, y=None, **options):
        """The Wald table as text in statsmodels' layout (``WaldTable.summary().as_text()``:
        coef, std err, z, P>|z|, the 95% interval, a header with n, t, E, ||grad||, s^2 and
        the covariance type). Arguments as for :meth:`wald_table`."""
        return self.wald_table(X, y, **options).summary().as_text()


class MLPRegressor(RegressorMixin, _DistHessMLP):
    """Regression network: squared loss on an identity output, one unit per target.

    Parameters
    ----------
    hidden_layer_sizes : int or sequence of int, default (10,)
        Units of each hidden layer; ``()`` fits a linear model (ordinary least
        squares, ridge with ``alpha > 0``).
    activation : str, default "tanh"
        Activation of every hidden layer (dist_hess names; scikit-learn's
        ``identity``, ``logistic``, ``tanh``, ``relu`` mean the same).
    alpha : float, default 0.0001
        L2 lambda of ``E = sum_i 1/2 ||y_i - f(x_i)||^2 + alpha/2 ||W||^2`` over the
        non-bias weights; equal to scikit-learn's ``alpha`` (module docstring).
    skip : bool, default False
        Every layer after the first also reads the inputs (layer 0).
    method : str or None, default None
        `dist_hess.fit`'s ``method``; ``None`` leaves its default.
    starts : int or None, default None
        Number of random starts (the lowest converged ``E`` is kept).
    max_iter : int, default 500
        Iterations of `dist_hess.fit` per start.
    tol : float, default 1e-6
        `dist_hess.fit`'s ``gtol``: stop when ``||grad E|| <= tol``.
    random_state : int, RandomState or None, default None
        Seeds of the starting weights.
    client : distributed.Client, scheduler address or None, default None
        Where `dist_hess.fit` and the Hessian run (``None``: dist_hess's default).
        Clones share it (``GridSearchCV`` works with a live client at ``n_jobs=1``:
        the parallelism is the cluster's); a live client does not pickle, so set
        ``client=None`` or give the scheduler address before pickling an estimator.

    Attributes
    ----------
    model_ : dist_hess.Model
        The network, its loss and penalty.
    coef_ : ndarray (t,)
        The fitted weights in dist_hess's flat layout (DESIGN §1: layer by layer,
        rows ``[bias, weights]``).
    n_iter_ : int
        Iterations of the (best) fit.
    loss_ : float
        ``E(coef_)``: the summed loss plus penalty (not scikit-learn's mean).
    hessian_ : ndarray (t, t) or None
        The exact Hessian of ``E`` at ``coef_`` when ``t <= HESSIAN_MAX_PARAMS``
        (1000), else ``None``.
    fit_result_ : dist_hess.train.FitResult
        What `dist_hess.fit` returned (with ``.starts`` when ``starts`` is given).
    n_outputs_ : int
        Number of targets.
    n_features_in_, feature_names_in_
        As in scikit-learn (``feature_names_in_`` only when ``X`` is a DataFrame
        with string column names).
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _validate_targets(self, X, y):
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True, dtype=np.float64)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        self._single_output = y.ndim == 1
        Y = self._encode_targets(y)
        return X, Y, "squared", Y.shape[1]

    def _encode_targets(self, y):
        """Targets ``(n, c)`` as floats."""
        y = np.asarray(y, dtype=float)
        return y[:, None] if y.ndim == 1 else y

    def predict(self, X):
        """Predictions ``(n,)`` for one target, ``(n, c)`` for several."""
        out = self._raw_output(X)
        return out[:, 0] if self._single_output else out


class MLPClassifier(ClassifierMixin, _DistHessMLP):
    """Classification network: cross-entropy on logits.

    Two classes: one logit unit and ``binary_cross_entropy`` (``classes_[1]`` is the
    positive class); ``C > 2`` classes: ``C`` logits and ``softmax_cross_entropy``.
    Labels may be any sortable values (strings, non-contiguous integers): they are
    mapped to ``0..C-1`` through ``classes_``. Parameters and attributes as
    :class:`MLPRegressor` (``alpha`` is the L2 lambda of
    ``E = sum_i g_i + alpha/2 ||W||^2``), plus ``classes_``.
    """

    def _validate_targets(self, X, y):
        X, y = validate_data(self, X, y, dtype=np.float64)
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            raise ValueError(f"{type(self).__name__} needs at least two classes in y, got only "
                             f"one class: {self.classes_[0]!r}")
        if len(self.classes_) == 2:
            return X, self._encode_targets(y), "binary_cross_entropy", 1
        return X, self._encode_targets(y), "softmax_cross_entropy", len(self.classes_)

    def _output_names(self):
        return [str(c) for c in self.classes_]

    def _encode_targets(self, y):
        """Labels as indices into ``classes_`` (floats 0/1 for two classes)."""
        y = column_or_1d(y)
        index = np.searchsorted(self.classes_, y)
        index = np.minimum(index, len(self.classes_) - 1)
        unknown = self.classes_[index] != y
        if np.any(unknown):
            raise ValueError(f"y has labels not seen in fit: {np.unique(y[unknown])[:5]!r}; "
                             f"classes_ = {self.classes_!r}")
        return index.astype(float) if len(self.classes_) == 2 else index

    def _scores(self, X) -> np.ndarray:
        """Class logits ``(n, C)`` up to a per-row constant (two classes: ``[0, z]``)."""
        z = self._raw_output(X)
        return np.concatenate([np.zeros_like(z), z], axis=1) if len(self.classes_) == 2 else z

    def predict_log_proba(self, X):
        """Log class probabilities ``(n, C)``: the log-softmax of the logits (no ``log(0)``)."""
        z = self._scores(X)
        z = z - z.max(axis=1, keepdims=True)
        with np.errstate(under="ignore"):          # exp(-large) -> 0 is the right term
            return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    def predict_proba(self, X):
        """Class probabilities ``(n, C)``, columns in the order of ``classes_``."""
        with np.errstate(under="ignore"):          # a probability below 1e-308 is 0
            return np.exp(self.predict_log_proba(X))

    def predict(self, X):
        """The most probable class of each row, as a label from ``classes_``."""
        best = np.argmax(self._scores(X), axis=1)
        return self.classes_[best]


def from_sklearn(mlp):
    """A fitted scikit-learn ``MLPRegressor`` / ``MLPClassifier`` as ``(Model, w)``.

    Layer ``k`` of scikit-learn (``coefs_[k]`` ``(d_in, d_out)``, ``intercepts_[k]``)
    becomes dense layer ``k+1`` with rows ``[bias, weights]``:
    ``W^{k+1} = [intercepts_[k][:, None], coefs_[k].T]`` (DESIGN §1). The hidden
    activation is kept by name; the output is mapped with its loss:

    ========================  ==========================================
    ``out_activation_``       dist_hess output and loss
    ========================  ==========================================
    ``identity`` (regressor)  identity, ``squared``
    ``logistic``              identity (logits), ``binary_cross_entropy``
    ``softmax``               identity (logits), ``softmax_cross_entropy``
    ========================  ==========================================

    and the penalty is L2 with ``lambda = alpha`` (no penalty when ``alpha = 0``),
    so ``E = n * J`` where ``J`` is the objective whose gradient scikit-learn
    follows (module docstring); ``model.gradient(w, X, y) = n * grad J``. Targets
    for the returned model: regression ``y`` as is; classes as indices into
    ``mlp.classes_`` (two classes: 0/1; multilabel: the 0/1 indicator matrix).
    ``loss="poisson"`` regressors (``exp`` output) are refused: dist_hess has no
    Poisson loss.
    """
    for name in ("coefs_", "intercepts_", "out_activation_", "activation"):
        if not hasattr(mlp, name):
            raise TypeError(f"from_sklearn needs a fitted scikit-learn MLPRegressor or "
                            f"MLPClassifier; {type(mlp).__name__} has no {name!r}")
    losses = {"identity": "squared", "logistic": "binary_cross_entropy",
              "softmax": "softmax_cross_entropy"}
    if mlp.out_activation_ not in losses:
        raise ValueError(f"from_sklearn: output activation {mlp.out_activation_!r} "
                         f"(loss {getattr(mlp, 'loss', None)!r}) has no dist_hess loss; "
                         f"supported: {sorted(losses)}")
    coefs = [np.asarray(c, dtype=float) for c in mlp.coefs_]
    intercepts = [np.asarray(b, dtype=float) for b in mlp.intercepts_]
    layers = [{"type": "dense", "units": int(c.shape[1]),
               "activation": mlp.activation if k < len(coefs) - 1 else "identity",
               "sources": [k]} for k, c in enumerate(coefs)]
    alpha = float(mlp.alpha)
    spec = {"inputs": int(coefs[0].shape[0]), "layers": layers,
            "loss": losses[mlp.out_activation_],
            "penalty": {"type": "l2", "lambda": alpha} if alpha > 0 else None}
    classes = getattr(mlp, "classes_", None)
    spec = _with_names(spec, getattr(mlp, "feature_names_in_", None),
                       None if classes is None else [str(c) for c in classes])
    model = dh.Model.from_dict(spec)
    w = np.concatenate([np.column_stack([b, c.T]).ravel() for c, b in zip(coefs, intercepts)])
    return model, w
