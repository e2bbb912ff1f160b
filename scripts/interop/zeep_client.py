"""Calls Add(a, b) with a zeep client generated from a WSDL, with zeep's default settings.

Usage: python zeep_client.py WSDL_URL A B [ADDRESS]
Prints the sum. With ADDRESS, calls that URL instead of the WSDL's address (the only setting
changed). A SOAP fault or an HTTP error status as the answer (to the WSDL's GET or to the call):
prints "fault: ..." and exits with status 3, so that run.py tells it from a crash (a traceback,
status 1).
"""

import sys

import requests
import zeep
import zeep.exceptions

FAULT_EXIT = 3


def main():
    wsdl, a, b = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    try:
        client = zeep.Client(wsdl)
        if len(sys.argv) > 4:
            binding = next(iter(client.wsdl.bindings))
            service = client.create_service(str(binding), sys.argv[4])
        else:
            service = client.service
        answer = service.Add(a=a, b=b)
    except zeep.exceptions.Fault as fault:
        print(f"fault: {fault.code} {fault.message}")
        return FAULT_EXIT
    except zeep.exceptions.TransportError as err:
        print(f"fault: HTTP {err.status_code} {err.message}")
        return FAULT_EXIT
    except requests.HTTPError as err:
        print(f"fault: {err}")
        return FAULT_EXIT
    print(answer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
