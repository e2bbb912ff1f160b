#!/usr/bin/perl
# Calls Add(a, b) with SOAP::Lite as its documentation shows, without a WSDL: SOAP::Lite's
# defaults (SOAPAction "NAMESPACE#Add", an encoded rpc-style body in NAMESPACE).
# Usage: perl perl_client.pl URL NAMESPACE A B
# A SOAP fault as the answer: prints "fault: ..." and exits with status 3, so that run.py tells
# it from a crash (a die, such as SOAP::Lite's on an answer that is no SOAP message: status 255).
use strict;
use warnings;
use SOAP::Lite;

my ($url, $namespace, $a, $b) = @ARGV;
my $answer = SOAP::Lite->uri($namespace)->proxy($url)->Add(SOAP::Data->name(a => $a), SOAP::Data->name(b => $b));
if ($answer->fault) {
    print 'fault: ', $answer->faultcode, ' ', $answer->faultstring, "\n";
    exit 3;
}
print $answer->result, "\n";
