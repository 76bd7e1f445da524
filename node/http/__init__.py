"""The node's HTTP face: an OpenAI-compatible API over the marketplace, Prometheus `/metrics` and
a dashboard at `/`, one ASGI app served by uvicorn as a node component (`HttpServer`).

Like the gRPC servicers it makes no chain or p2p calls of its own: every request goes through
the node's façade (`NodeServices`).
"""
