"""Content-addressed blobs: the tensor codec, the chunk store and the exchange service."""
