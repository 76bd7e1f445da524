"""The node's gRPC API (`proto/gpunode/v1/api.proto`): what the CLI and the SDK talk to.

- `server.serve(services, settings)` → `ApiServer` (start/stop/run, `ready`): the four services
  over the façade in `node.domain.service`, gRPC health and reflection;
- `interceptors` + `status_map`: every error from `node.errors`' tree leaves as one status code
  chosen in one table, with its message and hint; anything else as INTERNAL with a correlation id;
- `auth`: the optional bearer token in `<home>/api.token` (`api.require_token`);
- `upload`: model uploads checked by size and sha256 before they reach the model store;
- `convert`: request checks and the views ↔ messages mapping;
- `client.ApiClient`: the typed asyncio client, answering with the façade's views.

The API makes no chain or p2p calls of its own; everything goes through the façade.
"""
