"""Statistical analysis of a fit from its exact Hessian (issue 4, docs/analysis.md).

* :func:`wald_table`, :func:`joint_wald`: standard errors and Wald tests from the
  exact inverse Hessian or sandwich (:mod:`.wald`, :mod:`.covariance`), for selected
  parameters by conjugate gradients when ``t`` is too large for the full matrix
  (:mod:`.selected`), or the labelled block approximations; ``WaldTable.summary()``
  in statsmodels' layout (:mod:`.summary`) and ``to_frame()``;
* :func:`prune`, :func:`saliencies`, :func:`obs_update`: OBD/OBS saliencies and
  backward pruning with retraining, weights held at zero by a
  masked model (:mod:`.pruning`, :mod:`.masking`);
* :func:`spectra`: eigenvalues of row, layer and full curvature, Lanczos on
  Hessian-vector products for the full matrix (:mod:`.spectra`);
* :func:`laplace_predict`: Laplace predictive mean and variance (:mod:`.laplace`);
* :func:`write_report`: an HTML report with plots and tables (:mod:`.report`).
"""
from .covariance import NonIdentifiableWarning, NotAMinimumWarning
from .groups import input_group, layer_group, parameter_names, select_parameters, unit_group
from .laplace import LaplacePrediction, laplace_predict
from .masking import MaskedModel, model_from_dict
from .per_example import example_gradients, output_jacobian
from .pruning import PruningPath, PruningStep, Saliencies, obs_update, prune, saliencies
from .report import write_report
from .selected import CGConvergenceWarning
from .spectra import Spectra, lanczos_extremes, spectra
from .summary import Summary
from .wald import JointWald, WaldTable, joint_wald, wald_table

__all__ = ["wald_table", "joint_wald", "WaldTable", "JointWald", "NonIdentifiableWarning",
           "NotAMinimumWarning", "MaskedModel", "model_from_dict", "input_group", "unit_group",
           "layer_group", "parameter_names", "select_parameters", "example_gradients",
           "output_jacobian", "CGConvergenceWarning", "Summary",
           "prune", "saliencies", "obs_update", "PruningPath", "PruningStep", "Saliencies",
           "spectra", "Spectra", "lanczos_extremes", "laplace_predict", "LaplacePrediction",
           "write_report"]
