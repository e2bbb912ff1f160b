<?php
// Calls Add(a, b) with PHP's ext/soap SoapClient generated from a WSDL, default settings.
// Usage: php php_client.php WSDL_URL A B [ADDRESS]   (ADDRESS: call there instead)
// A SOAP fault (or an HTTP error) as the call's answer: prints "fault: ..." and exits with
// status 3, so that run.py tells it from a crash (an uncaught error: status 255).
[$script, $wsdl, $a, $b] = $argv;
$client = new SoapClient($wsdl, ['cache_wsdl' => WSDL_CACHE_NONE, 'exceptions' => true]);
if (isset($argv[4])) {
    $client->__setLocation($argv[4]);
}
try {
    $answer = $client->Add(['a' => (int) $a, 'b' => (int) $b]);
} catch (SoapFault $fault) {
    echo 'fault: ', $fault->faultcode, ' ', $fault->getMessage(), "\n";
    exit(3);
}
echo $answer->AddResult, "\n";
