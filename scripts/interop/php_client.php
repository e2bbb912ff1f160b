<?php
// Calls Add(a, b) with PHP's ext/soap SoapClient generated from a WSDL, default settings.
// Usage: php php_client.php WSDL_URL A B [ADDRESS]   (ADDRESS: call there instead)
[$script, $wsdl, $a, $b] = $argv;
$client = new SoapClient($wsdl, ['cache_wsdl' => WSDL_CACHE_NONE, 'exceptions' => true]);
if (isset($argv[4])) {
    $client->__setLocation($argv[4]);
}
$answer = $client->Add(['a' => (int) $a, 'b' => (int) $b]);
echo $answer->AddResult, "\n";
