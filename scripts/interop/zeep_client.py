"""Calls Add(a, b) with a zeep client generated from a WSDL, with zeep's default settings.

Usage: python zeep_client.py WSDL_URL A B [ADDRESS]
Prints the sum. With ADDRESS, calls that URL instead of the WSDL's address (the only setting
changed).
"""

import sys

import zeep


def main():
    wsdl, a, b = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    client = zeep.Client(wsdl)
    if len(sys.argv) > 4:
        binding = next(iter(client.wsdl.bindings))
        service = client.create_service(str(binding), sys.argv[4])
    else:
        service = client.service
    print(service.Add(a=a, b=b))


if __name__ == "__main__":
    main()
