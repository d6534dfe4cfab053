# guie on a CUDA PyTorch base image: the guie-* commands on PATH, caches and runs under mounted volumes.
#   docker build -t guie .
#   docker run --gpus all --ipc=host -v /data:/data -v $PWD/runs:/runs -v guie-cache:/cache \
#       -e WANDB_API_KEY guie guie-train --config /opt/guie/configs/vith14-laion2b-4000.toml --out /runs/vith14
FROM pytorch/pytorch:2.9.1-cuda12.8-cudnn9-runtime

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GUIE_CACHE=/cache \
    HF_HOME=/cache/huggingface

WORKDIR /opt/guie
COPY setup.py pyproject.toml README.md ./
COPY guie ./guie
COPY configs ./configs
# GUIE_TORCH_PIN=none keeps the base image's CUDA torch instead of pulling another build.
RUN GUIE_TORCH_PIN=none pip install --no-cache-dir . \
    && guie --version

VOLUME ["/cache", "/runs"]
WORKDIR /runs
CMD ["guie", "--help"]
