<?php
// A SOAP 1.1 calculator on PHP's ext/soap SoapServer, in WSDL mode (document/literal wrapped,
// an empty soapAction as JAX-WS publishes). Run with the built-in server:
//   INTEROP_NS=urn:x php -S 127.0.0.1:PORT php_service.php
// GET ?wsdl answers the WSDL; POST is the SOAP endpoint.
$ns = getenv('INTEROP_NS');
$address = 'http://' . $_SERVER['HTTP_HOST'] . strtok($_SERVER['REQUEST_URI'], '?');
$wsdl = strtr(file_get_contents(__DIR__ . '/calc.wsdl'), ['{ns}' => $ns, '{address}' => $address, '{action}' => '']);
if ($_SERVER['REQUEST_METHOD'] === 'GET') {
    header('Content-Type: text/xml; charset=utf-8');
    echo $wsdl;
    return;
}
$file = sys_get_temp_dir() . '/interop-' . md5($wsdl) . '.wsdl';
file_put_contents($file, $wsdl);

class Calculator {
    public function Add($request) {
        return ['AddResult' => $request->a + $request->b];
    }
}

$server = new SoapServer($file, ['cache_wsdl' => WSDL_CACHE_NONE]);
$server->setClass('Calculator');
$server->handle();
