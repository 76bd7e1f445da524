"""The libp2p overlay: the only package that imports trio.

`P2PHost` (host.py) runs py-libp2p in its own trio thread behind an asyncio bridge (bridge.py):
TCP, Noise only, yamux, identify, ping, gossipsub, a Kademlia DHT with strict namespaced
validators. On top of it: `/gpunode/job/1` (job_protocol.py, job_messages.py) and
`/gpunode/blob/1` (blob_protocol.py, blob_store.py). The node's secp256k1 key is also its libp2p
identity, so a peer id proves an Ethereum address (identity.py).
"""
