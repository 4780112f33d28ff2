# ecgsearch with CUDA: the PyTorch image brings torch + CUDA + cuDNN, pip adds the rest.
# Build: docker build -t ecgsearch .   Run: docker run --gpus all ecgsearch worker --study NAME ...
FROM pytorch/pytorch:2.7.1-cuda12.8-cudnn9-runtime

# Every worker of a study must run the same Optuna (studies refuse mismatched versions): pin it
# to the version the machines outside the container use.
ARG OPTUNA_VERSION=5.0.0

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/ecgsearch
COPY pyproject.toml README.md ./
COPY ecgmodels ./ecgmodels
COPY spaces ./spaces
COPY studies ./studies
COPY search ./search
# torch is already in the image and satisfies the project's range, so pip keeps the CUDA build.
RUN pip install . "optuna==${OPTUNA_VERSION}" \
    && python -c "import torch, optuna, search.cli; assert torch.version.cuda, 'expected a CUDA torch'"

RUN useradd --create-home --uid 1000 ecg \
    && mkdir -p /data /mlartifacts \
    && chown ecg:ecg /mlartifacts
USER ecg
WORKDIR /home/ecg

ENTRYPOINT ["ecgsearch"]
CMD ["--help"]
