"""ELLA fitted by several processes: each computes its share of the kernel features, of every NeuralEF batch and
of the curvature and validation batches, and every process ends with the same posterior.

    torchrun --nproc_per_node=2 examples/distributed_fit.py            # one machine, gloo on the CPU
    torchrun --nnodes=2 --nproc_per_node=4 --rdzv_backend=c10d \\
             --rdzv_endpoint=HOST:29500 examples/distributed_fit.py     # several machines (NCCL on GPUs)

Every process is given the same loaders (not a DistributedSampler) and the same seed; ella splits the work.
"""

import os

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from ella import ELLA, distributed
from ella_lab.data import mnist1d
from ella_lab.train import train_mnist1d_cnn

if torch.cuda.is_available():  # one GPU per process, NCCL between them
    device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    torch.cuda.set_device(device)
    dist.init_process_group("nccl")
else:
    device = torch.device("cpu")
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
rank, size = distributed.world()
data = mnist1d(num_test=2000)
model, _ = train_mnist1d_cnn(data, seed=0, progress=False)  # every process trains the same MAP network
model = model.to(device)  # the loaders stay on the CPU: ella moves each batch to the model
train, val = DataLoader(data.train, batch_size=256), DataLoader(data.val, batch_size=500)
post = ELLA(model, k=20, progress=rank == 0).fit(train, val)
post.save("ella-distributed.pt")  # the first process writes it
if rank == 0:
    print(f"{size} processes: prior precision {post.prior_precision_:.3g}, eigenvalues {post.eigenvalues[:3].tolist()}")
dist.destroy_process_group()
