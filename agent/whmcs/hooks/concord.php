<?php
/**
 * Concord: have the agent number an invoice before WHMCS emails it.
 *
 * Copy this file to <whmcs>/includes/hooks/concord.php and set the two values below (or the
 * environment variables CONCORD_AGENT_URL and CONCORD_AGENT_HOOK_TOKEN). Without this file
 * the agent still numbers every due invoice within seconds; with it, the number is in place
 * before the "Invoice Paid" / "Invoice Created" email is composed.
 *
 * A failure never blocks WHMCS: after the timeout the email goes out and the agent's loop
 * numbers the invoice shortly after.
 */

if (!defined('WHMCS')) {
    die('This file cannot be accessed directly');
}

const CONCORD_AGENT_URL = 'http://127.0.0.1:8701';
const CONCORD_AGENT_HOOK_TOKEN = '';
const CONCORD_TIMEOUT_SECONDS = 5;

function concord_number_invoice($invoiceId)
{
    $url = getenv('CONCORD_AGENT_URL') ?: CONCORD_AGENT_URL;
    $token = getenv('CONCORD_AGENT_HOOK_TOKEN') ?: CONCORD_AGENT_HOOK_TOKEN;
    $invoiceId = (int) $invoiceId;
    if ($invoiceId <= 0) {
        return null;
    }
    if ($token === '') {
        if (function_exists('logActivity')) {
            logActivity("Concord: invoice {$invoiceId} was not numbered before its email: set "
                . "CONCORD_AGENT_HOOK_TOKEN in includes/hooks/concord.php; the agent will number it shortly");
        }
        return null;
    }
    $ch = curl_init(rtrim($url, '/') . '/hooks/number');
    curl_setopt_array($ch, [
        CURLOPT_POST => true,
        CURLOPT_POSTFIELDS => http_build_query(['invoiceid' => $invoiceId]),
        CURLOPT_HTTPHEADER => ['X-Concord-Hook-Token: ' . $token],
        CURLOPT_RETURNTRANSFER => true,
        CURLOPT_CONNECTTIMEOUT => 2,
        CURLOPT_TIMEOUT => CONCORD_TIMEOUT_SECONDS,
    ]);
    $body = curl_exec($ch);
    $status = (int) curl_getinfo($ch, CURLINFO_HTTP_CODE);
    $error = curl_error($ch);
    curl_close($ch);
    if ($body === false || $status !== 200) {
        if (function_exists('logActivity')) {
            logActivity("Concord: numbering invoice {$invoiceId} before its email failed "
                . "(HTTP {$status} {$error}); the agent will number it shortly");
        }
        return null;
    }
    $answer = json_decode($body, true);
    return is_array($answer) && isset($answer['invoicenum']) ? $answer['invoicenum'] : null;
}

add_hook('InvoicePaidPreEmail', 1, function ($vars) {
    concord_number_invoice($vars['invoiceid'] ?? 0);
});

add_hook('InvoiceCreationPreEmail', 1, function ($vars) {
    concord_number_invoice($vars['invoiceid'] ?? 0);
});
