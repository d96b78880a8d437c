<?php
// WordPress core's esc_url_raw() (wp-includes/formatting.php, esc_url() in the 'db' context),
// as far as it goes for the URL setup_inputs() builds, 'http://' . HTTP_HOST . REQUEST_URI: the
// protocol check lets an http:// URL through as it is. Shared by input.php and route.php.
function _deep_replace($search, $subject) {
    $subject = (string) $subject;
    $count = 1;
    while ($count) {
        $subject = str_replace($search, '', $subject, $count);
    }
    return $subject;
}
function esc_url_raw($url) {
    if ('' === $url) {
        return $url;
    }
    $url = str_replace(' ', '%20', ltrim($url));
    $url = preg_replace('|[^a-z0-9-~+_.?#=!&;,/:%@$\|*\'()\[\]\\x80-\\xff]|i', '', $url);
    if ('' === $url) {
        return $url;
    }
    if (0 !== stripos($url, 'mailto:')) {
        $url = _deep_replace(array('%0d', '%0a', '%0D', '%0A'), $url);
    }
    $url = str_replace(';//', '://', $url);
    if (str_contains($url, '[') || str_contains($url, ']')) {
        $parsed = parse_url($url);
        $front = '';
        if (isset($parsed['scheme'])) {
            $front .= $parsed['scheme'] . '://';
        } elseif ('/' === $url[0]) {
            $front .= '//';
        }
        if (isset($parsed['user'])) {
            $front .= $parsed['user'];
        }
        if (isset($parsed['pass'])) {
            $front .= ':' . $parsed['pass'];
        }
        if (isset($parsed['user']) || isset($parsed['pass'])) {
            $front .= '@';
        }
        if (isset($parsed['host'])) {
            $front .= $parsed['host'];
        }
        if (isset($parsed['port'])) {
            $front .= ':' . $parsed['port'];
        }
        $end_dirty = str_replace($front, '', $url);
        $end_clean = str_replace(array('[', ']'), array('%5B', '%5D'), $end_dirty);
        $url = str_replace($end_dirty, $end_clean, $url);
    }
    return $url;
}
