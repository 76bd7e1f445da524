# gpunode provider image: CUDA runtime, bubblewrap for the job sandbox, gpunode in a venv.
# Build from the repository root:  docker build -f docker/provider.Dockerfile -t gpunode-provider .
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GPUNODE_HOME=/var/lib/gpunode \
    PATH=/opt/venv/bin:$PATH

# bubblewrap runs each job in its own namespaces; the venv lives outside any 0700 home so the
# sandbox's unprivileged uid can read the interpreter.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv bubblewrap ca-certificates tini \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv \
    && useradd --system --uid 10001 --create-home --home-dir /var/lib/gpunode --shell /usr/sbin/nologin gpunode

# torch first and pinned: on Linux x86_64 the PyPI wheel is the CUDA build this image wants.
RUN pip install 'torch==2.13.0'

WORKDIR /opt/gpunode
COPY pyproject.toml README.md ./
COPY node ./node
COPY scripts/make_builtin_models.py ./scripts/
COPY docker/entrypoint.sh ./docker/
RUN pip install './[cuda]'

USER 10001
WORKDIR /var/lib/gpunode
VOLUME ["/var/lib/gpunode"]
# libp2p overlay and the gRPC API.
EXPOSE 4001 50051 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s CMD ["gpunode", "node", "status", "--json"]
ENTRYPOINT ["tini", "--", "/opt/gpunode/docker/entrypoint.sh"]
CMD ["provider"]
