#!/usr/bin/perl
# Calls Add(a, b) with SOAP::Lite as its documentation shows, without a WSDL: SOAP::Lite's
# defaults (SOAPAction "NAMESPACE#Add", an encoded rpc-style body in NAMESPACE).
# Usage: perl perl_client.pl URL NAMESPACE A B
use strict;
use warnings;
use SOAP::Lite;

my ($url, $namespace, $a, $b) = @ARGV;
my $answer = SOAP::Lite->uri($namespace)->proxy($url)->Add(SOAP::Data->name(a => $a), SOAP::Data->name(b => $b));
die 'fault: ' . $answer->faultstring . "\n" if $answer->fault;
print $answer->result, "\n";
