"""Registers and unregisters an endpoint with a zeep client generated from the WSDL of
Switchboard's SOAP registration endpoint (`GET /v1/soap/registration?wsdl`), zeep defaults.

Usage: python zeep_registrar.py WSDL_URL register|unregister ADDRESS CONTRACT_NAME NAMESPACE
"""

import sys

import zeep


def main():
    wsdl, operation, address, name, namespace = sys.argv[1:6]
    client = zeep.Client(wsdl)
    info = {"Address": address, "ContractName": name, "ContractNamespace": namespace}
    if operation == "register":
        client.service.Register(regInfo=info)
    else:
        client.service.Unregister(regInfo=info)
    print("ok")


if __name__ == "__main__":
    main()
