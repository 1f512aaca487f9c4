"""A settings field holding where a channel goes; what a target may be (one address, a
list of replicas, any gRPC target URI) is said in ``ordermesh_client.targets``."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator

from ordermesh_client.targets import grpc_target as grpc_target
from ordermesh_client.targets import target_authority as target_authority

# A settings field holding a target: validated and normalised when settings load.
GrpcTarget = Annotated[str, AfterValidator(grpc_target)]
