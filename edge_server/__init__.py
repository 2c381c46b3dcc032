"""The edge server: serves replicated ``@offload`` functions to nearby clients."""

from .config import ServerConfig
from .server import EdgeServer

__all__ = ["EdgeServer", "ServerConfig"]
