/* HTTP/1.1 message syntax (RFC 9112) for the server: the request head and
 * chunked request bodies. Pure functions over bytes: no I/O, no allocation,
 * no global state. Not a public header (the server module's own).
 *
 * The parser is strict where leniency lets two parties read one message
 * differently (request smuggling) or lets a byte the application never sees
 * change what it does:
 * - a NUL, a bare CR, or another control character (except HTAB in a field
 *   value) anywhere in the head is refused;
 * - a field name is a token; whitespace between it and the colon, a line
 *   folded onto the next (obs-fold), or a line without a colon is refused;
 * - Content-Length is digits only; repeated with different values, or
 *   together with Transfer-Encoding, is refused; Transfer-Encoding must be
 *   exactly "chunked" (once) on HTTP/1.1 and is refused on HTTP/1.0;
 * - lines end with CRLF; a bare LF is accepted as a line end (RFC 9112 2.2
 *   allows it) but a CR not followed by LF is not;
 * - empty lines before the request line are skipped (RFC 9112 2.2).
 * Every refusal comes with a sentence naming what was wrong. */
#ifndef INFERD_SERVER_HTTP1_H
#define INFERD_SERVER_HTTP1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HTTP1_HEADERS_MAX 64 /* header fields in one request */

/* A view into the caller's buffer (not NUL-terminated). */
typedef struct http1_str {
    const char *p;
    size_t n;
} http1_str;

typedef struct http1_header {
    http1_str name;  /* as sent (compare case-insensitively) */
    http1_str value; /* without the whitespace around it */
} http1_header;

typedef enum http1_body {
    HTTP1_BODY_NONE,    /* no body (no Content-Length, or 0) */
    HTTP1_BODY_LENGTH,  /* content_length bytes follow the head */
    HTTP1_BODY_CHUNKED, /* the chunked transfer coding */
} http1_body;

typedef struct http1_request {
    http1_str method;
    http1_str target;  /* as sent: origin-form "/path?query", absolute-form, "*" */
    unsigned minor;    /* HTTP/1.<minor>: 0 or 1 */
    size_t head_bytes; /* the head's length: empty lines before it, the request
                          line, the fields and the empty line that ends it */
    http1_header headers[HTTP1_HEADERS_MAX];
    size_t n_headers;
    http1_body body;
    uint64_t content_length; /* HTTP1_BODY_LENGTH */
    bool keep_alive;         /* the connection may carry another request after
                                this one (the version's default and Connection) */
    bool expect_continue;    /* "Expect: 100-continue" */
} http1_request;

typedef enum http1_result {
    HTTP1_OK = 0,
    HTTP1_INCOMPLETE = 1, /* no end of the head yet: read more (within max) */
    HTTP1_BAD = -1,       /* malformed or ambiguous: 400, then close */
    HTTP1_TOO_LARGE = -2, /* the head passed its limit or HTTP1_HEADERS_MAX
                             fields: 431, then close */
    HTTP1_VERSION = -3,   /* not HTTP/1.0 or HTTP/1.1: 505, then close */
    HTTP1_EXPECT = -4,    /* an Expect other than 100-continue: 417 */
} http1_result;

/* Parse the request head at the start of @p buf (@p len bytes so far, at
 * most @p max_head of which may belong to the head). HTTP1_OK fills
 * @p out_req, whose views point into @p buf; a refusal sets @p why to a
 * sentence (static storage) for the error response. */
http1_result http1_parse_head(const char *buf, size_t len, size_t max_head, http1_request *out_req,
                              const char **why);

/* The value of header @p name (case-insensitive) in @p req, or NULL. */
const http1_str *http1_header_get(const http1_request *req, const char *name);

/* The value of hexadecimal digit @p c, or -1. */
int http1_hex_digit(unsigned char c);

/* Does the comma-separated list @p v hold token @p tok (case-insensitive)? */
bool http1_list_has(http1_str v, const char *tok);

/* Decoding a chunked body (RFC 9112 7.1): chunk-size [;ext] CRLF data CRLF
 * ... "0" [;ext] CRLF [trailer fields] CRLF. Trailer fields are read and
 * dropped. The decoder moves data within the caller's buffer. */
typedef struct http1_chunked {
    int state;       /* private */
    uint64_t left;   /* bytes left of the current chunk */
    size_t line_len; /* bytes of the current size, extension or trailer line */
    bool line_cr;    /* that line's CR was seen */
} http1_chunked;

#define HTTP1_CHUNK_LINE_MAX 4096 /* a chunk-size line or a trailer field */

/* Decode bytes @p in [0, @p in_len) of the body: the data is appended at
 * @p out (@p out_cap bytes free; may alias @p in, as out <= in), *in_used
 * and *out_len say how much was consumed and produced. Returns HTTP1_OK at
 * the end of the body (*in_used stops there: what follows is the next
 * request), HTTP1_INCOMPLETE when more is needed (all of @p in used, or
 * @p out full: call again with room), HTTP1_BAD (and @p why) when malformed. */
http1_result http1_chunked_decode(http1_chunked *d, const char *in, size_t in_len, size_t *in_used,
                                  char *out, size_t out_cap, size_t *out_len, const char **why);

#endif
