/* Readiness callback over libcurl, with retries (see inferd/readycb.h). */
#include "inferd/readycb.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "inferd/alloc.h"
#include "inferd/clock.h"
#include "inferd/log.h"

#define COMP "ready-callback"
#define BODY_KEEP 200 /* bytes of a final answer kept for the message */

inferd_ready_cb inferd_ready_cb_default(void)
{
    inferd_ready_cb cb;
    memset(&cb, 0, sizeof(cb));
    cb.max_attempts = 8;
    cb.base_delay_ms = 250;
    cb.max_delay_ms = 30000;
    cb.timeout_ms = 10000;
    return cb;
}

static void random_bytes(unsigned char *p, size_t n)
{
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    size_t got = 0;
    if (fd >= 0) {
        while (got < n) {
            ssize_t r = read(fd, p + got, n - got);
            if (r <= 0)
                break;
            got += (size_t)r;
        }
        close(fd);
    }
    if (got < n) { /* no /dev/urandom: the clock, good enough for jitter */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t x = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ (uint64_t)getpid();
        for (size_t i = got; i < n; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            p[i] = (unsigned char)x;
        }
    }
}

void inferd_uuid4(char out[37])
{
    unsigned char b[16];
    random_bytes(b, sizeof(b));
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40); /* version 4 */
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
             b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
             b[14], b[15]);
}

typedef struct answer {
    char text[BODY_KEEP + 1];
    size_t len;
} answer;

static size_t on_body(char *p, size_t size, size_t n, void *ctx)
{
    answer *a = ctx;
    size_t bytes = size * n, keep = BODY_KEEP - a->len;
    if (keep > bytes)
        keep = bytes;
    memcpy(a->text + a->len, p, keep);
    a->len += keep;
    a->text[a->len] = '\0';
    return bytes;
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

/* The delay before retry @p attempt (1-based): base * 2^(attempt-1),
 * capped, times a random factor in [0.5, 1.5). */
static int64_t backoff_ms(const inferd_ready_cb *cb, uint32_t attempt)
{
    int64_t d = cb->base_delay_ms;
    for (uint32_t i = 1; i < attempt && d < cb->max_delay_ms; i++)
        d *= 2;
    if (d > cb->max_delay_ms)
        d = cb->max_delay_ms;
    uint16_t r;
    random_bytes((unsigned char *)&r, sizeof(r));
    return d / 2 + (int64_t)((double)d * (double)r / 65536.0);
}

int inferd_ready_cb_post(const inferd_ready_cb *cb, inferd_error *err)
{
    if (!cb->url || !*cb->url)
        return inferd_fail(err, INFERD_E_INVALID, "ready callback: no URL");
    if (!cb->worker_id || !*cb->worker_id)
        return inferd_fail(err, INFERD_E_INVALID, "ready callback: no worker id");
    pthread_once(&curl_once, curl_init);
    json_t *o =
        json_pack("{s:s,s:o,s:s,s:I,s:i,s:{s:s,s:s,s:s}}", "worker_id", cb->worker_id, "pool_id",
                  cb->pool_id ? json_string(cb->pool_id) : json_null(), "endpoint",
                  cb->endpoint ? cb->endpoint : "", "memory_bytes", (json_int_t)cb->memory_bytes,
                  "slots_total", (int)cb->slots_total, "capabilities", "engine", "inferd",
                  "engine_version", cb->engine_version ? cb->engine_version : "", "model_ref",
                  cb->model_ref ? cb->model_ref : "");
    char *body = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    CURL *h = curl_easy_init();
    struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    if (!body || !h || !hdrs) {
        inferd_free(body);
        curl_easy_cleanup(h);
        curl_slist_free_all(hdrs);
        return inferd_fail(err, INFERD_E_NOMEM, "ready callback: no memory");
    }
    int rc = INFERD_E_UNAVAILABLE;
    char last[256] = "";
    const uint32_t attempts = cb->max_attempts ? cb->max_attempts : 1;
    for (uint32_t a = 1; a <= attempts; a++) {
        answer ans = {{0}, 0};
        char cerr[CURL_ERROR_SIZE] = "";
        curl_easy_reset(h);
        curl_easy_setopt(h, CURLOPT_URL, cb->url);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)cb->timeout_ms);
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &ans);
        curl_easy_setopt(h, CURLOPT_ERRORBUFFER, cerr);
        CURLcode cc = curl_easy_perform(h);
        long status = 0;
        if (cc == CURLE_OK)
            curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        if (cc == CURLE_OK && status >= 200 && status < 300) {
            inferd_log_info(COMP, "%s accepted the worker (HTTP %ld, attempt %u)", cb->url, status,
                            a);
            rc = 0;
            break;
        }
        if (cc == CURLE_OK && status < 500) {
            rc = inferd_fail(err, INFERD_E_INVALID, "ready callback: %s answered %ld: %s", cb->url,
                             status, ans.text);
            break;
        }
        if (cc == CURLE_OK)
            snprintf(last, sizeof(last), "HTTP %ld: %s", status, ans.text);
        else
            snprintf(last, sizeof(last), "%s", cerr[0] ? cerr : curl_easy_strerror(cc));
        if (a < attempts) {
            int64_t d = backoff_ms(cb, a);
            inferd_log_warn(COMP, "attempt %u of %u failed (%s); retrying in %lld ms", a, attempts,
                            last, (long long)d);
            inferd_sleep_ms(d);
        }
    }
    if (rc == INFERD_E_UNAVAILABLE)
        inferd_fail(err, rc, "ready callback: %s failed %u times; last: %s", cb->url, attempts,
                    last);
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(h);
    inferd_free(body);
    return rc;
}
