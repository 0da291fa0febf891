/* libFuzzer target for the HTTP/1.1 parser (src/server/http1.c): the input
 * is what a client sends on a connection. Its head is parsed with a limit
 * taken from the first input byte; a parse must either ask for more bytes
 * only when no prefix could have ended the head, or end with a head whose
 * views lie inside the input, or refuse with a sentence. A chunked body
 * after the head is decoded whole and again a byte at a time: both must
 * agree. Also linked into the replay driver, which runs
 * tests/fuzz/corpus/http1. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http1.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void inside(const http1_str *s, const char *buf, size_t len)
{
    if (s->n > 0 && (s->p < buf || s->p + s->n > buf + len))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const size_t max_head = 16 + (size_t)data[0] * 16;
    const char *buf = (const char *)data + 1;
    const size_t len = size - 1;
    char *copy = malloc(len ? len : 1); /* exact size: ASan sees any overread */
    if (!copy)
        return 0;
    memcpy(copy, buf, len);
    http1_request rq;
    const char *why = NULL;
    http1_result r = http1_parse_head(copy, len, max_head, &rq, &why);
    if (r == HTTP1_OK) {
        if (rq.head_bytes > len || rq.head_bytes > max_head || rq.n_headers > HTTP1_HEADERS_MAX)
            abort();
        inside(&rq.method, copy, rq.head_bytes);
        inside(&rq.target, copy, rq.head_bytes);
        for (size_t i = 0; i < rq.n_headers; i++) {
            inside(&rq.headers[i].name, copy, rq.head_bytes);
            inside(&rq.headers[i].value, copy, rq.head_bytes);
            if (memchr(rq.headers[i].value.p, '\0', rq.headers[i].value.n))
                abort(); /* a NUL must never reach a header value */
        }
        if (rq.body == HTTP1_BODY_CHUNKED) {
            const char *in = copy + rq.head_bytes;
            const size_t in_len = len - rq.head_bytes;
            char *whole = malloc(in_len + 1), *bytewise = malloc(in_len + 1);
            if (whole && bytewise) {
                http1_chunked d1 = {0}, d2 = {0};
                size_t used1 = 0, out1 = 0, out2 = 0, used2 = 0;
                http1_result r1 =
                    http1_chunked_decode(&d1, in, in_len, &used1, whole, in_len, &out1, &why);
                http1_result r2 = HTTP1_INCOMPLETE;
                for (size_t i = 0; i < in_len && r2 == HTTP1_INCOMPLETE; i++) {
                    size_t u = 0, o = 0;
                    r2 = http1_chunked_decode(&d2, in + i, 1, &u, bytewise + out2, in_len - out2,
                                              &o, &why);
                    used2 += u;
                    out2 += o;
                }
                if (r1 != r2 || out1 != out2 || memcmp(whole, bytewise, out1) != 0)
                    abort();
                if (r1 == HTTP1_OK && used1 != used2)
                    abort();
                if (r1 == HTTP1_BAD && (!why || !*why))
                    abort();
            }
            free(whole);
            free(bytewise);
        }
    } else if (r == HTTP1_INCOMPLETE) {
        if (len >= max_head)
            abort();
    } else if (!why || !*why) {
        abort();
    }
    free(copy);
    return 0;
}
