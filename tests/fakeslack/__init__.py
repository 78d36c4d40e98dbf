"""Wire-level Slack fakes: a fake Web API server, a signed request sender and a WSGI server helper."""

from tests.fakeslack.client import Response, SignedSlackClient
from tests.fakeslack.server import Call, FakeSlack, WsgiServer

__all__ = ["Call", "FakeSlack", "Response", "SignedSlackClient", "WsgiServer"]
