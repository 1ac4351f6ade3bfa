"""The names ella's settings take, in one module without imports (torch-free: the command line reads them
before anything is loaded). Each is checked where it is used (:mod:`ella.checks`)."""

#: ``likelihood`` of every method.
LIKELIHOODS = ("classification", "regression")
#: ``link``: class probabilities from a Gaussian predictive (:func:`ella.predictive.link_probs`).
LINKS = ("margin", "probit", "mc")
#: ``estimator`` of :class:`ella.kernels.EmpiricalNTK`.
NTK_ESTIMATORS = ("exact", "jvp", "fd")
#: ELLA's named ``solver`` choices (besides ``"auto"`` and an :class:`ella.eigen.EigenSolver`).
SOLVERS = ("neuralef", "nystrom", "exact", "spin")
#: ELLA's ``residual`` choices (besides a number of random directions).
RESIDUALS = ("auto", "learned", "mean", "none")
#: ``fold_in`` choices of the linearised methods (besides a number of points).
FOLD_INS = ("all", "tune")
