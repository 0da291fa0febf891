/* HTTP/1.1 message syntax (RFC 9112): the request head and chunked bodies.
 * See http1.h for what is refused and why. */
#include "http1.h"

#include <string.h>
#include <strings.h>

/* tchar (RFC 9110 5.6.2). */
static bool is_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return true;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* A byte allowed inside a field value: VCHAR, obs-text, SP, HTAB. */
static bool is_value_byte(unsigned char c) { return c == '\t' || (c >= 0x20 && c != 0x7f); }

static bool str_is(http1_str s, const char *lit)
{
    size_t n = strlen(lit);
    return s.n == n && strncasecmp(s.p, lit, n) == 0;
}

/* The end of the line starting at @p p (the index of its '\n'), scanning at
 * most to @p end; (size_t)-1 when there is none yet. */
static size_t find_lf(const char *buf, size_t p, size_t end)
{
    const char *q = memchr(buf + p, '\n', end - p);
    return q ? (size_t)(q - buf) : (size_t)-1;
}

/* Length of the line [p, lf) without its CR; -1 when a CR is not right
 * before the LF (a bare CR: refused). */
static long line_len(const char *buf, size_t p, size_t lf)
{
    size_t n = lf - p;
    if (n > 0 && buf[lf - 1] == '\r')
        n--;
    if (memchr(buf + p, '\r', n))
        return -1;
    return (long)n;
}

static http1_result bad(const char **why, const char *msg)
{
    *why = msg;
    return HTTP1_BAD;
}

static http1_result parse_request_line(const char *l, size_t n, http1_request *r, const char **why)
{
    size_t i = 0;
    while (i < n && is_tchar((unsigned char)l[i]))
        i++;
    if (i == 0 || i >= n || l[i] != ' ')
        return bad(why, memchr(l, '\0', n) ? "a NUL byte in the request line"
                                           : "a malformed request line (want METHOD SP TARGET "
                                             "SP HTTP/1.1)");
    r->method = (http1_str){l, i};
    size_t t = ++i;
    while (i < n && (unsigned char)l[i] > 0x20 && l[i] != 0x7f)
        i++;
    if (i == t || i >= n || l[i] != ' ')
        return bad(why, memchr(l, '\0', n) ? "a NUL byte in the request line"
                                           : "a malformed request target (want METHOD SP TARGET "
                                             "SP HTTP/1.1, the target without spaces or control "
                                             "characters)");
    r->target = (http1_str){l + t, i - t};
    const char *v = l + i + 1;
    size_t vn = n - i - 1;
    if (vn != 8 || memcmp(v, "HTTP/", 5) != 0 || v[5] < '0' || v[5] > '9' || v[6] != '.' ||
        v[7] < '0' || v[7] > '9')
        return bad(why, memchr(v, '\0', vn) ? "a NUL byte in the request line"
                                            : "a malformed HTTP version (want HTTP/1.1 or "
                                              "HTTP/1.0)");
    if (v[5] != '1' || v[7] > '1') {
        *why = "only HTTP/1.1 and HTTP/1.0 are served";
        return HTTP1_VERSION;
    }
    r->minor = (unsigned)(v[7] - '0');
    return HTTP1_OK;
}

/* One field line [l, l + n) into r->headers. */
static http1_result parse_field(const char *l, size_t n, http1_request *r, const char **why)
{
    if (l[0] == ' ' || l[0] == '\t')
        return bad(why, "a header line folded onto the next (obs-fold) is not accepted");
    size_t i = 0;
    while (i < n && is_tchar((unsigned char)l[i]))
        i++;
    if (i == n)
        return bad(why, "a header line without a colon");
    if (l[i] != ':') {
        if (l[i] == '\0')
            return bad(why, "a NUL byte in a header name");
        if (l[i] == ' ' || l[i] == '\t')
            return bad(why, "whitespace between a header name and its colon");
        return bad(why, "a header name with a character that is not allowed in a token");
    }
    if (i == 0)
        return bad(why, "a header line with an empty name");
    http1_str name = {l, i};
    size_t b = i + 1, e = n;
    for (size_t k = b; k < n; k++) {
        unsigned char c = (unsigned char)l[k];
        if (!is_value_byte(c))
            return bad(why, c == 0 ? "a NUL byte in a header value"
                                   : "a control character in a header value");
    }
    while (b < e && (l[b] == ' ' || l[b] == '\t'))
        b++;
    while (e > b && (l[e - 1] == ' ' || l[e - 1] == '\t'))
        e--;
    if (r->n_headers == HTTP1_HEADERS_MAX) {
        *why = "too many header fields";
        return HTTP1_TOO_LARGE;
    }
    r->headers[r->n_headers++] = (http1_header){name, {l + b, e - b}};
    return HTTP1_OK;
}

/* Content-Length: digits only, no overflow. */
static bool parse_length(http1_str v, uint64_t *out)
{
    if (v.n == 0)
        return false;
    uint64_t x = 0;
    for (size_t i = 0; i < v.n; i++) {
        if (v.p[i] < '0' || v.p[i] > '9')
            return false;
        const uint64_t d = (uint64_t)(v.p[i] - '0');
        if (x > (UINT64_MAX - d) / 10)
            return false; /* does not fit */
        x = x * 10 + d;
    }
    *out = x;
    return true;
}

/* How the body is framed, and the fields with a meaning for the
 * connection (RFC 9112 6.1-6.3, 9.3; RFC 9110 10.1.1). */
static http1_result read_semantics(http1_request *r, const char **why)
{
    int n_cl = 0, n_te = 0, n_host = 0;
    bool close = false, keep = false;
    for (size_t i = 0; i < r->n_headers; i++) {
        const http1_header *h = &r->headers[i];
        if (str_is(h->name, "Content-Length")) {
            uint64_t x;
            if (!parse_length(h->value, &x))
                return bad(why, "a Content-Length that is not a number of bytes");
            if (n_cl++ > 0 && x != r->content_length)
                return bad(why, "Content-Length given twice with different values");
            r->content_length = x;
        } else if (str_is(h->name, "Transfer-Encoding")) {
            if (n_te++ > 0 || !str_is(h->value, "chunked"))
                return bad(why, "a transfer coding other than chunked");
        } else if (str_is(h->name, "Host")) {
            n_host++;
        } else if (str_is(h->name, "Connection")) {
            close |= http1_list_has(h->value, "close");
            keep |= http1_list_has(h->value, "keep-alive");
        } else if (str_is(h->name, "Expect")) {
            if (!str_is(h->value, "100-continue")) {
                *why = "only 'Expect: 100-continue' is understood";
                return HTTP1_EXPECT;
            }
            r->expect_continue = r->minor == 1;
        }
    }
    if (n_cl > 0 && n_te > 0)
        return bad(why, "Content-Length together with Transfer-Encoding");
    if (n_te > 0 && r->minor == 0)
        return bad(why, "Transfer-Encoding in an HTTP/1.0 request");
    if (r->minor == 1 && n_host != 1)
        return bad(why, n_host == 0 ? "an HTTP/1.1 request without a Host header"
                                    : "more than one Host header");
    r->body = n_te       ? HTTP1_BODY_CHUNKED
              : n_cl > 0 ? (r->content_length > 0 ? HTTP1_BODY_LENGTH : HTTP1_BODY_NONE)
                         : HTTP1_BODY_NONE;
    r->keep_alive = !close && (r->minor == 1 || keep);
    if (r->body == HTTP1_BODY_NONE)
        r->expect_continue = false;
    return HTTP1_OK;
}

http1_result http1_parse_head(const char *buf, size_t len, size_t max_head, http1_request *out_req,
                              const char **why)
{
    static const char *const too_large = "the request head is larger than the limit";
    const size_t end = len < max_head ? len : max_head;
    /* Empty lines before the request line. */
    size_t p = 0;
    for (;;) {
        if (p < end && buf[p] == '\n') {
            p++;
        } else if (p + 1 < end && buf[p] == '\r' && buf[p + 1] == '\n') {
            p += 2;
        } else if (p < end && buf[p] == '\r' && p + 1 == end) {
            goto incomplete;
        } else {
            break;
        }
    }
    http1_request r;
    memset(&r, 0, sizeof(r));
    size_t lf = find_lf(buf, p, end);
    if (lf == (size_t)-1)
        goto incomplete;
    long n = line_len(buf, p, lf);
    if (n < 0)
        return bad(why, "a CR not followed by LF in the request line");
    http1_result res = parse_request_line(buf + p, (size_t)n, &r, why);
    if (res != HTTP1_OK)
        return res;
    /* Find the empty line first, so that nothing is judged on a partial
     * head (and an incomplete one costs a scan, not a parse). */
    size_t q = lf + 1;
    for (;;) {
        size_t f = find_lf(buf, q, end);
        if (f == (size_t)-1)
            goto incomplete;
        if (f == q || (f == q + 1 && buf[q] == '\r'))
            break;
        q = f + 1;
    }
    for (p = lf + 1;;) {
        lf = find_lf(buf, p, end);
        n = line_len(buf, p, lf);
        if (n < 0)
            return bad(why, "a CR not followed by LF in a header line");
        if (n == 0)
            break;
        if ((res = parse_field(buf + p, (size_t)n, &r, why)) != HTTP1_OK)
            return res;
        p = lf + 1;
    }
    r.head_bytes = lf + 1;
    if ((res = read_semantics(&r, why)) != HTTP1_OK)
        return res;
    *out_req = r;
    return HTTP1_OK;
incomplete:
    if (len >= max_head) {
        *why = too_large;
        return HTTP1_TOO_LARGE;
    }
    return HTTP1_INCOMPLETE;
}

const http1_str *http1_header_get(const http1_request *req, const char *name)
{
    for (size_t i = 0; i < req->n_headers; i++)
        if (str_is(req->headers[i].name, name))
            return &req->headers[i].value;
    return NULL;
}

bool http1_list_has(http1_str v, const char *tok)
{
    size_t i = 0;
    while (i < v.n) {
        while (i < v.n && (v.p[i] == ' ' || v.p[i] == '\t' || v.p[i] == ','))
            i++;
        size_t b = i;
        while (i < v.n && v.p[i] != ',')
            i++;
        size_t e = i;
        while (e > b && (v.p[e - 1] == ' ' || v.p[e - 1] == '\t'))
            e--;
        if (e > b && str_is((http1_str){v.p + b, e - b}, tok))
            return true;
    }
    return false;
}

/* ---- chunked ---- */

enum {
    CH_SIZE,    /* hex digits of a chunk size */
    CH_EXT,     /* ";ext" up to the line end */
    CH_DATA,    /* chunk data */
    CH_DATA_CR, /* the CR after the data */
    CH_DATA_LF, /* the LF after the data */
    CH_TRAILER, /* a trailer field line, or the final empty line */
    CH_DONE,
};

int http1_hex_digit(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

http1_result http1_chunked_decode(http1_chunked *d, const char *in, size_t in_len, size_t *in_used,
                                  char *out, size_t out_cap, size_t *out_len, const char **why)
{
    size_t i = 0, o = 0;
    http1_result res = HTTP1_INCOMPLETE;
    while (i < in_len && d->state != CH_DONE) {
        unsigned char c = (unsigned char)in[i];
        if (d->state == CH_DATA) {
            size_t k = in_len - i;
            if (k > d->left)
                k = (size_t)d->left;
            if (k > out_cap - o)
                k = out_cap - o;
            if (k == 0)
                break; /* out is full */
            memmove(out + o, in + i, k);
            o += k;
            i += k;
            if ((d->left -= k) == 0)
                d->state = CH_DATA_CR;
            continue;
        }
        i++;
        if (d->state == CH_DATA_CR || d->state == CH_DATA_LF) {
            if (d->state == CH_DATA_CR && c == '\r') {
                d->state = CH_DATA_LF;
            } else if (c == '\n') {
                d->state = CH_SIZE;
                d->line_len = 0;
                d->line_cr = false;
                d->left = 0;
            } else {
                res = bad(why, "a chunk's data is not followed by CRLF");
                goto out;
            }
            continue;
        }
        /* A size line, its extension, or a trailer line: bounded, CR only
         * right before LF, no NUL or other control byte. */
        if (++d->line_len > HTTP1_CHUNK_LINE_MAX) {
            res = bad(why, "a chunk-size or trailer line longer than the limit");
            goto out;
        }
        if (d->line_cr && c != '\n') {
            res = bad(why, "a CR not followed by LF in a chunked body");
            goto out;
        }
        if (c == '\r') {
            d->line_cr = true;
            continue;
        }
        if (c != '\n' && !is_value_byte(c)) {
            res = bad(why, c == 0 ? "a NUL byte in a chunked body's framing"
                                  : "a control character in a chunked body's framing");
            goto out;
        }
        if (d->state == CH_SIZE) {
            int h = http1_hex_digit(c);
            if (h >= 0) {
                if (d->left >> 60) {
                    res = bad(why, "a chunk size too large");
                    goto out;
                }
                d->left = d->left << 4 | (uint64_t)h;
                continue;
            }
            const size_t n_digits = d->line_len - 1 - (d->line_cr ? 1 : 0);
            if (n_digits == 0 || (c != ';' && c != '\n' && c != ' ' && c != '\t')) {
                res = bad(why, "a chunk size that is not a hexadecimal number");
                goto out;
            }
            d->state = CH_EXT;
        }
        if (d->state == CH_EXT) {
            if (c != '\n')
                continue;
            d->line_len = 0;
            d->line_cr = false;
            d->state = d->left == 0 ? CH_TRAILER : CH_DATA;
            continue;
        }
        /* CH_TRAILER */
        if (c == '\n') {
            const bool empty = d->line_len == 1 || (d->line_len == 2 && d->line_cr);
            d->line_len = 0;
            d->line_cr = false;
            if (empty)
                d->state = CH_DONE;
        }
    }
    if (d->state == CH_DONE)
        res = HTTP1_OK;
out:
    *in_used = i;
    *out_len = o;
    return res;
}
