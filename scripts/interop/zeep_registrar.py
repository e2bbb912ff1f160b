"""Registers and unregisters an endpoint with a zeep client generated from the WSDL of
Switchboard's SOAP registration endpoint (`GET /v1/soap/registration?wsdl`), zeep defaults.

Usage: python zeep_registrar.py WSDL_URL register|unregister ADDRESS CONTRACT_NAME NAMESPACE
Prints "ok"; a SOAP fault as the answer: prints "fault: ..." and exits with status 3.
"""

import sys

import zeep
import zeep.exceptions

FAULT_EXIT = 3


def main():
    wsdl, operation, address, name, namespace = sys.argv[1:6]
    client = zeep.Client(wsdl)
    info = {"Address": address, "ContractName": name, "ContractNamespace": namespace}
    try:
        if operation == "register":
            client.service.Register(regInfo=info)
        else:
            client.service.Unregister(regInfo=info)
    except zeep.exceptions.Fault as fault:
        print(f"fault: {fault.code} {fault.message}")
        return FAULT_EXIT
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
