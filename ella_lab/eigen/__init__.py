"""The eigen-solver experiments (``ella eigen``): a solver's eigenpairs against an exact reference on a kernel and
data set. The names they take are here, without imports (the command line reads them before torch is loaded)."""

#: the kernels of the experiments (:func:`ella_lab.eigen.problems.make_problem`).
KERNELS = ("rbf", "polynomial", "nngp", "ntk")
#: the data sets.
DATASETS = ("gaussian-1d", "moons", "circles", "mnist1d")
#: the solvers compared with the exact reference.
SOLVERS = ("neuralef", "spin", "nystrom")
