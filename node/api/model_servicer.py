"""`gpunode.v1.ModelService`: models in this node's store, uploads checked byte for byte."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc.aio

from node.api.convert import model_to_pb
from node.api.upload import received_model
from node.domain.service import ModelsApi
from node.gen.gpunode.v1 import api_pb2 as pb
from node.logging import get_logger

log = get_logger(__name__)


class ModelServicer:
    def __init__(self, models: ModelsApi, *, staging_root: Path, max_upload_bytes: int) -> None:
        self._models = models
        self._staging_root = staging_root
        self._max_upload_bytes = max_upload_bytes

    async def UploadModel(
        self, requests: AsyncIterator[pb.UploadModelRequest], context: grpc.aio.ServicerContext
    ) -> pb.Model:
        async with received_model(
            requests, staging_root=self._staging_root, max_bytes=self._max_upload_bytes
        ) as received:
            view = await self._models.add(received.source, upload=received.upload)
        log.info("model_uploaded", model_id=view.model_id, name=view.name, size=view.size_bytes)
        return model_to_pb(view)

    async def RemoveModel(
        self, request: pb.RemoveModelRequest, context: grpc.aio.ServicerContext
    ) -> pb.Model:
        view = await self._models.remove(request.model_id, delete_files=request.delete_files)
        log.info("model_removed", model_id=view.model_id, deleted=request.delete_files)
        return model_to_pb(view)

    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(models=[model_to_pb(v) for v in await self._models.list()])
