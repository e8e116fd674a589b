<?php
/**
 * Concord WebService "Get": a sample client in PHP with curl, written the way WHMCS's
 * External API samples are (a form POST, a JSON answer).
 *
 * It asks a Get feed for invoices and credit notes and prints one line per document,
 * tab-separated (ID, Type, Num, Status, Date, Client, Subtotal, Tax, Tax2) after a header
 * line, so the output goes straight into a spreadsheet, awk or cut.
 *
 *   php get.php URL TOKEN [field=value ...]
 *
 *   # an agent: this store's documents, numbered or not (Num is empty until numbered)
 *   php get.php http://127.0.0.1:8701/webservice "$AGENT_WEBSERVICE_TOKEN" start="Month to date"
 *   # the coordinator: the issued documents of every store (keys are STORE/ID)
 *   php get.php http://127.0.0.1:8700/v1/webservice "$READER_TOKEN" store=eu-1 doctype=Invoices
 *
 * URL and TOKEN may come from the environment instead: CONCORD_GET_URL, CONCORD_GET_TOKEN.
 * The fields are the contract's filters (docs/api.md, "The WebService Get feed"): start,
 * end, invoicenum, invoiceid, doctype, and store on the coordinator. Exit status 0 on
 * success; 1 with a line on stderr when the command line is wrong, the feed cannot be
 * reached, or it refused the request (its message says what to fix).
 *
 * Needs php-cli with the curl extension (Debian: apt-get install php-cli php-curl).
 */

const FILTERS = ['start', 'end', 'invoicenum', 'invoiceid', 'doctype', 'store'];
const COLUMNS = ['ID', 'Type', 'Num', 'Status', 'Date', 'Client', 'Subtotal', 'Tax', 'Tax2'];

function fail($message)
{
    fwrite(STDERR, $message . "\n");
    exit(1);
}

// URL and TOKEN (positional, else from the environment) and the filter fields.
$positional = [];
$fields = [];
foreach (array_slice($argv, 1) as $argument) {
    $parts = explode('=', $argument, 2);
    if (count($parts) === 2 && in_array($parts[0], FILTERS, true)) {
        $fields[$parts[0]] = $parts[1];
    } else {
        $positional[] = $argument;
    }
}
if (count($positional) > 2) {
    fail("usage: get.php URL TOKEN [field=value ...]; unknown: '{$positional[2]}' (fields: "
        . implode(', ', FILTERS) . ')');
}
$url = $positional[0] ?? (getenv('CONCORD_GET_URL') ?: '');
$token = $positional[1] ?? (getenv('CONCORD_GET_TOKEN') ?: '');
if ($url === '' || $token === '') {
    fail('usage: get.php URL TOKEN [field=value ...] (or set CONCORD_GET_URL and CONCORD_GET_TOKEN)');
}

// The request: form fields, as WHMCS's External API samples send them.
$postfields = array_merge(['action' => 'Get', 'token' => $token], $fields);

$ch = curl_init();
curl_setopt($ch, CURLOPT_URL, $url);
curl_setopt($ch, CURLOPT_POST, 1);
curl_setopt($ch, CURLOPT_POSTFIELDS, http_build_query($postfields));
curl_setopt($ch, CURLOPT_RETURNTRANSFER, 1);
curl_setopt($ch, CURLOPT_CONNECTTIMEOUT, 10);
curl_setopt($ch, CURLOPT_TIMEOUT, 60);
$response = curl_exec($ch);
if ($response === false) {
    fail("cannot reach {$url}: " . curl_error($ch));
}
$status = curl_getinfo($ch, CURLINFO_HTTP_CODE);
curl_close($ch);

// The answer is one JSON object keyed by document ID, in date then ID order; `{}` when
// nothing matches.
$documents = json_decode($response, true);
if ($status !== 200) {
    // Errors have the contract's shape: {"result": "error", "message": "..."}.
    $message = is_array($documents) && isset($documents['message']) ? $documents['message'] : '';
    fail("the feed answered HTTP {$status}: " . ($message !== '' ? $message : $response));
}
if (!is_array($documents)) {
    fail('the feed answered something other than JSON: ' . substr($response, 0, 200));
}

echo implode("\t", COLUMNS), "\n";
foreach ($documents as $key => $document) {
    // ClientData comes from the invoice snapshot: the client as the invoice shows it.
    $client = $document['ClientData'];
    $doc = $document['DocData'];
    $row = [
        $key, $doc['Type'], $doc['Num'], $doc['Status'], $doc['Date'],
        $client['CompanyName'] !== '' ? $client['CompanyName'] : $client['ClientName'],
        $doc['Subtotal'], $doc['Tax'], $doc['Tax2'],
    ];
    // A tab or line break inside a value would shift the columns: each is printed as a space.
    echo implode("\t", str_replace(["\t", "\r", "\n"], ' ', $row)), "\n";
}
fwrite(STDERR, count($documents) . " documents\n");
