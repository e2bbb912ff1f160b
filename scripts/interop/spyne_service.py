"""A SOAP 1.1 calculator written with spyne (document/literal, spyne's defaults).

Usage: python spyne_service.py PORT NAMESPACE
Serves POST (SOAP) and GET ?wsdl on every path of 127.0.0.1:PORT until killed.
"""

import sys
from wsgiref.simple_server import WSGIRequestHandler, make_server

from spyne import Application, Integer32, ServiceBase, rpc
from spyne.protocol.soap import Soap11
from spyne.server.wsgi import WsgiApplication


class ICalculator(ServiceBase):
    @rpc(Integer32, Integer32, _returns=Integer32)
    def Add(ctx, a, b):  # noqa: N802, N805 - the operation's name; spyne passes the context first
        return a + b


class QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


def main():
    port, namespace = int(sys.argv[1]), sys.argv[2]
    application = Application(
        [ICalculator], tns=namespace, name="ICalculator", in_protocol=Soap11(), out_protocol=Soap11()
    )
    server = make_server("127.0.0.1", port, WsgiApplication(application), handler_class=QuietHandler)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
