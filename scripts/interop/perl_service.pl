#!/usr/bin/perl
# A SOAP 1.1 calculator on SOAP::Lite's server side (SOAP::Transport::HTTP::Server behind
# HTTP::Daemon), dispatching on the namespace of the body's first element. GET ?wsdl answers a
# WSDL of the same contract (SOAP::Lite does not write WSDLs; this one is the shared template,
# with "NAMESPACE#Add" as the action, SOAP::Lite's convention).
# Usage: perl perl_service.pl PORT NAMESPACE
use strict;
use warnings;
use File::Basename qw(dirname);
use HTTP::Daemon;
use HTTP::Response;
use SOAP::Transport::HTTP;

my ($port, $namespace) = @ARGV;

package Calculator;
our @ISA = ('SOAP::Server::Parameters');
sub Add {
    my ($class, @params) = @_;
    my $envelope = pop @params;
    my ($a, $b) = map { $envelope->dataof("//Add/$_")->value } qw(a b);
    return SOAP::Data->name(AddResult => $a + $b)->type('int');
}

package main;

open(my $template, '<', dirname(__FILE__) . '/calc.wsdl') or die "no WSDL template: $!";
my $wsdl = do { local $/; <$template> };
$wsdl =~ s/\{ns\}/$namespace/g;
$wsdl =~ s/\{action\}/$namespace#Add/g;

my $daemon = HTTP::Daemon->new(LocalAddr => '127.0.0.1', LocalPort => $port, ReuseAddr => 1) or die "bind: $!";
my $soap = SOAP::Transport::HTTP::Server->new->dispatch_with({ $namespace => 'Calculator' });
$| = 1;
print "ready\n";
while (my $connection = $daemon->accept) {
    while (my $request = $connection->get_request) {
        if ($request->method eq 'GET') {
            my $address = 'http://' . ($request->header('Host') // "127.0.0.1:$port") . $request->uri->path;
            (my $document = $wsdl) =~ s/\{address\}/$address/g;
            $connection->send_response(HTTP::Response->new(200, 'OK', ['Content-Type' => 'text/xml; charset=utf-8'], $document));
            next;
        }
        $soap->request($request);
        $soap->handle;
        $connection->send_response($soap->response);
    }
    $connection->close;
}
