"""Why extract keeps no document for a WARC response: each `removed/` reason in one line, as
the data report shows it beside the reason (README.md lists them too)."""

REASONS = {
    "extract_not_http": "the record's target URI is not http(s) (dns:, ftp:, ... records)",
    "extract_http_status": "an HTTP status other than 200",
    "extract_not_html": "not HTML by its Content-Type (or, without one, by its first bytes)",
    "extract_too_large": "the decoded page is longer than extract.max_html_bytes",
    "extract_duplicate_url": "a URL already kept earlier (in this shard or a lower one)",
    "extract_timeout": "trafilatura took longer than extract.timeout_seconds",
    "extract_error": "trafilatura failed on the page",
    "extract_no_text": "no main text, or less than extract.min_text_chars",
}
