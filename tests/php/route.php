<?php
// Which endpoint WPCOM_JSON_API::serve() (Automattic/jetpack class.json-api.php) picks
// for a request, from the same $_SERVER values: setup_inputs() builds the URL with
// esc_url_raw(set_url_scheme('http://' . HTTP_HOST . wp_unslash(REQUEST_URI))) (wp_unslash is
// stripslashes here), serve() untrailingslashit()s the path, cuts the version with
// #^/rest/v(\d+(\.\d+)*)# and matches the endpoint regexes.
// esc_url_raw() and _deep_replace() are WordPress core's, in esc_url.php.

require __DIR__ . '/esc_url.php';

$url  = esc_url_raw( 'http://' . ( $_SERVER['HTTP_HOST'] ?? '' ) . stripslashes( $_SERVER['REQUEST_URI'] ?? '' ) );
$parsed = parse_url( $url );
$path = $parsed['path'] ?? '';
$query = array();
if ( ! empty( $parsed['query'] ) ) {
	parse_str( $parsed['query'], $query ); // wp_parse_str() without filters
}
$path = rtrim( $path, '/\\' ); // untrailingslashit()
$version = null;
if ( preg_match( '#^/rest/v(\d+(\.\d+)*)#', $path, $m ) ) {
	$path    = substr( $path, strlen( $m[0] ) );
	$version = $m[1];
}
$endpoint = null;
$pieces = array();
foreach ( array( '/jpphp/provision', '/jpphp/%s/partner-provision', '/jpphp/%s/partner-cancel' ) as $e ) {
	$re = str_replace( array( '%s', '%d' ), array( '([^/?&]+)', '(\d+)' ), $e );
	if ( preg_match( "#^$re\$#", $path, $pieces ) ) {
		$endpoint = $e;
		break;
	}
}
header( 'Content-Type: application/json' );
echo json_encode( array(
	'method'      => strtoupper( $_SERVER['REQUEST_METHOD'] ),
	'request_uri' => $_SERVER['REQUEST_URI'],
	'url'         => $url,
	'path'        => $path,
	'version'     => $version,
	'endpoint'    => $endpoint,
	'site'        => $pieces[1] ?? null,
	'query'       => $query,
) ), "\n";
