"""placeholder"""

from basewatch.api.config import APPLICATION_NAME, ApiConfig
from basewatch.api.server import make_server, run_api

__all__ = ["APPLICATION_NAME", "ApiConfig", "make_server", "run_api"]
