"""SGD trajectories as data: record a training run's snapshots, store them, read their moments.

    recorder = TrajectoryRecorder(x_train, every=5, max_snapshots=200)      # functions on the training inputs
    for step, batch in enumerate(loader):                                  # any training loop
        ...; recorder(step, model)
    trajectory = recorder.trajectory

or ``Trajectory.from_checkpoints(paths, model)`` from state_dict files. The SGD-trajectory kernel
(:class:`ella.kernels.SGDTrajectoryKernel`), SWA and SWAG (:mod:`ella.methods`) are built from a trajectory.
"""

from .moments import WeightMoments
from .record import Schedule, TrajectoryRecorder
from .snapshots import SnapshotFiles, check_snapshot, flat_parameters, model_state, with_parameters
from .store import Trajectory

__all__ = [
    "Trajectory",
    "TrajectoryRecorder",
    "Schedule",
    "WeightMoments",
    "SnapshotFiles",
    "check_snapshot",
    "flat_parameters",
    "model_state",
    "with_parameters",
]
