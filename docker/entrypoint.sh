#!/bin/sh
# Container entry point: one role per container of docker/compose.yaml.
#   deploy    import the key, deploy the contracts (the first two contracts of anvil's account 0
#             land at fixed addresses, which compose.yaml passes to every node)
#   provider  import the key, install the built-in models, register with a stake, serve jobs
#   client    import the key, run a client node with its gRPC API on 0.0.0.0:50051
# Anything else is passed to `gpunode` as it is.
set -eu

ensure_key() {
    if [ ! -f "$GPUNODE_HOME/keystore.json" ]; then
        gpunode keys import --json
    fi
}

role=${1:-provider}
case "$role" in
    deploy)
        ensure_key
        exec gpunode contracts deploy --json
        ;;
    provider)
        ensure_key
        python /opt/gpunode/scripts/make_builtin_models.py --json
        gpunode provider register --json || echo "already registered"
        exec gpunode provider start
        ;;
    client)
        ensure_key
        exec gpunode node start
        ;;
    *)
        exec gpunode "$@"
        ;;
esac
