<?php
// Which endpoint WPCOM_JSON_API::serve() (Automattic/jetpack class.json-api.php) picks
// for a request, from the same $_SERVER values: setup_inputs() builds the URL with
// esc_url_raw(set_url_scheme('http://' . HTTP_HOST . wp_unslash(REQUEST_URI))) (wp_unslash is
// stripslashes here), serve() untrailingslashit()s the path, cuts the version with
// #^/rest/v(\d+(\.\d+)*)# and matches the endpoint regexes.
// esc_url() and _deep_replace() are WordPress core's (wp-includes/formatting.php), verbatim but
// for the protocol check, which an http:// URL passes unchanged.

function _deep_replace( $search, $subject ) {
	$subject = (string) $subject;
	$count = 1;
	while ( $count ) {
		$subject = str_replace( $search, '', $subject, $count );
	}
	return $subject;
}

function esc_url_raw( $url ) {
	if ( '' === $url ) {
		return $url;
	}
	$url = str_replace( ' ', '%20', ltrim( $url ) );
	$url = preg_replace( '|[^a-z0-9-~+_.?#=!&;,/:%@$\|*\'()\[\]\\x80-\\xff]|i', '', $url );
	if ( '' === $url ) {
		return $url;
	}
	if ( 0 !== stripos( $url, 'mailto:' ) ) {
		$strip = array( '%0d', '%0a', '%0D', '%0A' );
		$url   = _deep_replace( $strip, $url );
	}
	$url = str_replace( ';//', '://', $url );
	// ('[' / ']' handling and the protocol check do not change an http:// URL with no brackets.)
	return $url;
}

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
