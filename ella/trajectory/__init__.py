"""SGD trajectories: record a training run's snapshots, and build SWA, SWAG and the SGD-trajectory kernel.

    recorder = TrajectoryRecorder(x_train, every=5, max_snapshots=200)      # functions on the training inputs
    train_map(model, loader, steps=1000, callback=recorder)                 # any loop: recorder(step, model)
    trajectory = recorder.trajectory
    kernel = ella.kernels.sgd_trajectory.SGDTrajectoryKernel(trajectory)
    post = ella.ELLA(swa_model(trajectory), kernel="sgd-trajectory", kernel_kwargs={"trajectory": trajectory})

or ``swa_phase(model, loader, steps=..., lr=...)`` from a trained model, or
``Trajectory.from_checkpoints(paths, model)`` from state_dict files.
"""

from .methods import trajectory_methods
from .moments import WeightMoments
from .record import Schedule, TrajectoryRecorder
from .snapshots import SnapshotFiles, check_snapshot, flat_parameters, model_state
from .store import Trajectory
from .swa import swa_model, swa_phase, update_bn

__all__ = ["Trajectory", "TrajectoryRecorder", "Schedule", "WeightMoments", "SnapshotFiles", "swa_model",
           "swa_phase", "update_bn", "trajectory_methods", "check_snapshot", "flat_parameters", "model_state"]
