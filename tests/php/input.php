<?php
// The reference reading for tests/php_differential.rs: what WordPress.com's REST API v1.x reads
// from a request, following `WPCOM_JSON_API::setup_inputs()` and
// `WPCOM_JSON_API_Endpoint::input()` (public copy: Automattic/jetpack,
// projects/plugins/jetpack/class.json-api.php and class.json-api-endpoints.php), with the
// request format of the provision endpoint: `siteurl` and `plan` cast as `(string)`.
//
// Answers JSON: for the body (`input`) and the query string (`query`), each of `siteurl` and
// `plan` (and the query's `force`) as hex of the bytes PHP reads, or null when it reads none.

// WordPress slashes $_POST on load (wp_magic_quotes) and input() unslashes it again.
function add_magic_quotes_deep($value) {
    return is_array($value) ? array_map('add_magic_quotes_deep', $value)
        : (is_string($value) ? addslashes($value) : $value);
}
function stripslashes_deep($value) {
    return is_array($value) ? array_map('stripslashes_deep', $value)
        : (is_string($value) ? stripslashes($value) : $value);
}
// wp_parse_str() without filters.
function wp_parse_str($input, &$result) {
    parse_str((string) $input, $result);
}

require __DIR__ . '/esc_url.php';

// setup_inputs(), for a POST.
$method = strtoupper($_SERVER['REQUEST_METHOD'] ?? '');
$post_body = null;
$content_type = null;
if ('POST' === $method) {
    $post_body = file_get_contents('php://input');
    if (!empty($_SERVER['HTTP_CONTENT_TYPE'])) {
        $content_type = $_SERVER['HTTP_CONTENT_TYPE'];
    } elseif (!empty($_SERVER['CONTENT_TYPE'])) {
        $content_type = $_SERVER['CONTENT_TYPE'];
    } elseif (isset($post_body[0]) && '{' === $post_body[0]) {
        $content_type = 'application/json';
    } else {
        $content_type = 'application/x-www-form-urlencoded';
    }
    if (str_starts_with(strtolower($content_type), 'multipart/')) {
        $post_body = http_build_query(stripslashes_deep(add_magic_quotes_deep($_POST)));
        $content_type = 'multipart/form-data';
    }
}

// input(), without the `force=secure` branch (the guard refuses it).
function input($post_body, $content_type) {
    $return = null;
    $input = trim((string) $post_body);
    $content_type = (string) $content_type;
    if ($content_type) {
        list($content_type) = explode(';', $content_type);
    }
    $content_type = trim($content_type);
    switch ($content_type) {
        case 'application/json':
        case 'application/x-javascript':
        case 'text/javascript':
        case 'text/x-javascript':
        case 'text/x-json':
        case 'text/json':
            $return = json_decode($input, true);
            if (JSON_ERROR_NONE !== json_last_error()) {
                return null;
            }
            break;
        case 'multipart/form-data':
            $return = array_merge(stripslashes_deep(add_magic_quotes_deep($_POST)), $_FILES);
            break;
        case 'application/x-www-form-urlencoded':
            $return = json_decode($input, true);
            if ($return === null) {
                wp_parse_str($input, $return);
            }
            break;
        default:
            wp_parse_str($input, $return);
            break;
    }
    return $return;
}

// cast_and_filter() with a `(string)` documentation of the key: absent or null is nothing, an
// array is given up, anything else is cast to string.
function read_string($data, $key) {
    if (!is_array($data) || !isset($data[$key])) {
        return null;
    }
    $value = $data[$key];
    if (is_array($value) || is_object($value)) {
        return null;
    }
    return bin2hex((string) $value);
}

$input = input($post_body, $content_type);
// setup_inputs() parses the query of the URL esc_url_raw() gives back, not QUERY_STRING, from
// the target unslashed first (wp_unslash(), stripslashes for a string).
$url = esc_url_raw('http://' . ($_SERVER['HTTP_HOST'] ?? '') . stripslashes($_SERVER['REQUEST_URI'] ?? ''));
$parsed = parse_url($url);
$query = array();
if (!empty($parsed['query'])) {
    wp_parse_str($parsed['query'], $query);
}
header('Content-Type: application/json');
echo json_encode(array(
    'input' => array('siteurl' => read_string($input, 'siteurl'), 'plan' => read_string($input, 'plan')),
    'query' => array(
        'siteurl' => read_string($query, 'siteurl'),
        'plan' => read_string($query, 'plan'),
        'force' => read_string($query, 'force'),
    ),
    'input_type' => gettype($input),
));
