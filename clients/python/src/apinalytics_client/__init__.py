"""Send your API's requests to APInalytics.

``Sender`` (a background thread, standard library only) or ``AsyncSender`` (a task on
the running event loop) batch the events; the middleware of ``apinalytics_client.asgi``,
``.aiohttp``, ``.wsgi`` (Flask) and ``.django`` record one per request.
"""

from ._core import Stats, make_event
from .async_sender import AsyncSender
from .sender import Sender

__all__ = ["AsyncSender", "Sender", "Stats", "make_event"]
__version__ = "0.1.0"
