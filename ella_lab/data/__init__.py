"""Data sets, all available offline: MNIST-1D (generated), scikit-learn digits, a 1-D toy regression.

Every loader returns a :class:`Splits` (train / validation / test ``TensorDataset`` s plus
``num_classes`` and ``input_shape``); :func:`loaders` turns it into seeded ``DataLoader`` s.

Note: the attribute ``ella_lab.data.mnist1d`` is the function (it shadows the submodule of the same name);
reach the module's other names with ``from ella_lab.data.mnist1d import ...`` or from
``ella_lab.data`` itself.
"""

from .digits import digits
from .mnist1d import MNIST1D_GENERATOR_ARGS, Splits, loaders, mnist1d
from .toy import toy_function, toy_regression

__all__ = ["Splits", "loaders", "mnist1d", "digits", "toy_regression", "toy_function", "MNIST1D_GENERATOR_ARGS"]
